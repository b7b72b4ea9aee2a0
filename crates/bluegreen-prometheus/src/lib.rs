#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod check;
mod reply;

pub use check::{Limit, PromQlCheck};
