//! The provider against an emulator of the Platform API whose requests and answers
//! are checked against Heroku's published schema (`HEROKU_PLATFORM_API_SCHEMA`).

mod support;

mod client;
mod conformance;
mod engine;
mod interrupt;
mod lock;
mod ownership;
mod schema;
mod sources;
mod tasks;
