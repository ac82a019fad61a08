//! Test plugin: version 1 of `which_version` (source in ../../versioned.rs).

include!("../../versioned.rs");
