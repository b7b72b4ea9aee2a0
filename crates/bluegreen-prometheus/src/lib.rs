#![doc = include_str!("../README.md")]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod check;
mod reply;

pub use check::{Limit, PromQlCheck};
