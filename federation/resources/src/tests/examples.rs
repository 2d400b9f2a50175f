//! Valid example documents of every kind.

pub(super) const SERVICE_EXPORT: &str = r#"
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: shop
  creationTimestamp: "2025-01-02T03:04:05Z"
  labels:
    app: web
status:
  conditions:
    - type: Valid
      status: "True"
      reason: Valid
      lastTransitionTime: "2025-01-02T03:04:06Z"
    - type: Conflict
      status: "False"
      observedGeneration: 1
      message: no conflict
"#;

pub(super) const SERVICE_IMPORT: &str = r#"
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: web
spec:
  type: ClusterSetIP
  ips: ["10.42.0.10", "fd00::10"]
  ports:
    - name: http
      port: 80
      appProtocol: http
    - name: dns
      protocol: UDP
      port: 53
  sessionAffinity: ClientIP
  sessionAffinityConfig:
    clientIP:
      timeoutSeconds: 600
status:
  clusters:
    - cluster: cluster-a
    - cluster: cluster-b
"#;

pub(super) const MESH_LINK: &str = r#"
apiVersion: isthmus.dev/v1alpha1
kind: MeshLink
metadata:
  name: cluster-b
  namespace: isthmus-system
spec:
  peerCluster: cluster-b
  trustDomain: cluster-b.isthmus.local
  bundleEndpoint: https://controller.cluster-b.example:8443/bundle
  gatewayAddresses: ["gw.cluster-b.example:15443", "[fd00::1]:15443", "192.0.2.7:15443"]
"#;

pub(super) const FAILOVER_POLICY: &str = r#"
apiVersion: isthmus.dev/v1alpha1
kind: FailoverPolicy
metadata:
  name: web
  namespace: shop
spec:
  service: web
  targets:
    - cluster: cluster-b
    - region: eu-west
"#;

/// All four, as one stream.
pub(super) fn stream() -> String {
    [SERVICE_EXPORT, SERVICE_IMPORT, MESH_LINK, FAILOVER_POLICY]
        .map(|d| format!("---{d}"))
        .concat()
}
