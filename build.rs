//! Build script: generates the image types from `proto/` (prost + protox, so
//! no `protoc` is needed) and compiles the C zdtm programs with the `cc` crate.

#[path = "build/proto.rs"]
mod proto;
#[path = "build/zdtm.rs"]
mod zdtm;

fn main() {
    proto::generate();
    zdtm::compile();
}
