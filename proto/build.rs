//! Generates the gRPC bridge's types, clients and servers from `ferry/provider/v1/*.proto`
//! when the `grpc` feature is on; does nothing otherwise.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        const FILES: &[&str] = &[
            "ferry/provider/v1/provider.proto",
            "ferry/provider/v1/keyvalue.proto",
            "ferry/provider/v1/blobstore.proto",
            "ferry/provider/v1/lattice.proto",
            "ferry/provider/v1/messaging.proto",
        ];
        for file in FILES {
            println!("cargo:rerun-if-changed={file}");
        }
        let descriptors = protox::compile(FILES, ["."])?;
        tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    }
    Ok(())
}
