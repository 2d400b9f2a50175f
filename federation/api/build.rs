//! Generates the tonic client and server glue of the Isthmus gRPC services
//! from Rust descriptions (`tonic_build::manual`): the messages are
//! hand-written prost structs in `src/identity.rs` and `src/peering.rs`, so
//! building needs no `protoc`.

use tonic_build::manual::{Builder, Method, Service};

const CODEC: &str = "tonic_prost::ProstCodec";

fn method(name: &str, route: &str, input: &str, output: &str, server_streaming: bool) -> Method {
    let builder = Method::builder()
        .name(name)
        .route_name(route)
        .input_type(input)
        .output_type(output)
        .codec_path(CODEC);
    if server_streaming {
        builder.server_streaming().build()
    } else {
        builder.build()
    }
}

fn main() {
    let identity = Service::builder()
        .name("Identity")
        .package("isthmus.identity.v1")
        .comment("SVID signing, trust bundle distribution and workload registration.")
        .method(method(
            "sign_svid",
            "SignSvid",
            "crate::identity::SignSvidRequest",
            "crate::identity::SignSvidResponse",
            false,
        ))
        .method(method(
            "watch_bundles",
            "WatchBundles",
            "crate::identity::WatchBundlesRequest",
            "crate::identity::BundleMapUpdate",
            true,
        ))
        .method(method(
            "register",
            "Register",
            "crate::identity::RegisterRequest",
            "crate::identity::RegisterResponse",
            false,
        ))
        .method(method(
            "deregister",
            "Deregister",
            "crate::identity::DeregisterRequest",
            "crate::identity::DeregisterResponse",
            false,
        ))
        .build();
    let peering = Service::builder()
        .name("Peering")
        .package("isthmus.peering.v1")
        .comment("Controller to controller: link redemption, exported services, unlink.")
        .method(method(
            "redeem",
            "Redeem",
            "crate::peering::RedeemRequest",
            "crate::peering::RedeemResponse",
            false,
        ))
        .method(method(
            "watch_exports",
            "WatchExports",
            "crate::peering::WatchExportsRequest",
            "crate::peering::ExportSet",
            true,
        ))
        .method(method(
            "unlink",
            "Unlink",
            "crate::peering::UnlinkRequest",
            "crate::peering::UnlinkResponse",
            false,
        ))
        .build();
    Builder::new().compile(&[identity, peering]);
}
