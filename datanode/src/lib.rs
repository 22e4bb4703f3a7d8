//! The kdfs datanode (library).
pub mod capacity;
pub mod error;
pub mod scanner;
pub mod store;
pub mod version;

pub use error::{Error, Result};
