//! The scenarios `kdfs bench --scenarios` runs, one per file; each returns one JSON
//! object whose `scenario` field names it.

pub(crate) mod ceiling;
pub(crate) mod failover;
pub(crate) mod heal;
pub(crate) mod large;
pub(crate) mod namenode;
pub(crate) mod namenode_ha;
pub(crate) mod s3;
pub(crate) mod small;
pub(crate) mod store;
