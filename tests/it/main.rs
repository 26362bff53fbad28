//! One integration test binary (link time), every test over real HTTP on both databases.

mod support;
mod fixtures;
mod smoke;
mod oauth;
mod oauth_support;
mod portability;
mod ops;
