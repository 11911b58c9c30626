//! CNI protocol types: configuration, results (with version conversion) and errors.

pub mod config;
pub mod error;
pub mod result;
pub mod version;

pub use config::{IpamConf, NetConf, NetConfList, parse_config, validate_name};
pub use error::{CniError, CniResult, ErrorCode};
pub use result::{CniOutput, Dns, Interface, IpConfig, Route};
pub use version::{CURRENT_VERSION, KNOWN_VERSIONS, SUPPORTED_VERSIONS, Version};
