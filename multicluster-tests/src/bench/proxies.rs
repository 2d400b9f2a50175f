//! Envoy and HAProxy proxy pairs for the benchmark (being written).
