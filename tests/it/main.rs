//! One integration test binary (link time), every test over real HTTP on both databases.

mod bad_input;
mod browser;
mod federation;
mod fixtures;
mod integrity;
mod invite;
mod layers;
mod matrix;
mod oauth;
mod oauth_authlib;
mod oauth_more;
mod oauth_std;
mod oauth_support;
mod ops;
mod portability;
mod portal;
mod processes;
mod safety;
mod smoke;
mod store;
mod support;
mod timeline;
mod transfer;
