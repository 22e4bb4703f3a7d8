//! The real namenode service on 127.0.0.1, driven by tonic clients acting as
//! datanodes and as the gateway. One test binary, one module per side of the API.

#[path = "../common/mod.rs"]
mod common;

mod datanodes;
mod http;
mod objects;
mod uploads;
