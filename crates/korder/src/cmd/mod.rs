//! One module per subcommand.

pub mod admin;
pub mod bench;
pub mod block;
pub mod channel;
pub mod client;
pub mod init;
pub mod ledger;
pub mod log;
pub mod start;
