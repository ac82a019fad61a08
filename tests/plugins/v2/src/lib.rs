//! Test plugin: version 2 of `which_version` (source in ../../versioned.rs).

include!("../../versioned.rs");
