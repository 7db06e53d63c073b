//! Compiles `proto/agora/v1/agora.proto` with protox (a pure-Rust protobuf compiler), so a
//! build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_file = "proto/agora/v1/agora.proto";
    println!("cargo:rerun-if-changed={proto_file}");
    let descriptors = protox::compile([proto_file], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // AgentService has an RPC named `Connect`, which would clash with the generated
        // `connect` constructor; clients build a `Channel` and call `new` instead.
        .build_transport(false)
        // Same wire format, smaller per-stream buffers (see `src/codec.rs`).
        .codec_path("crate::codec::SmallBufferCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
