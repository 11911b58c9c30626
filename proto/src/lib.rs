//! CRI v1 API (runtime.v1) protobuf definitions and generated tonic code.
