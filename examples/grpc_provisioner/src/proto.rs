//! `provisioner.v1` (proto/provisioner.proto): its messages, a client and the server glue, written
//! by hand in the shape `tonic-prost-build` generates, so that building needs no `protoc`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{Body, StdError, http};

/// `provisioner.v1.GrantRequest`.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct GrantRequest {
    /// The caller's id for this grant: the same on every attempt, so a retry never grants twice.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The user.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// The resource: a group, an app or a role.
    #[prost(string, tag = "3")]
    pub resource_id: String,
}

/// `provisioner.v1.GrantResponse`.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct GrantResponse {
    /// The grant made (the same for every request with one `request_id`).
    #[prost(string, tag = "1")]
    pub grant_id: String,
}

/// `provisioner.v1.RevokeRequest`.
#[derive(Clone, PartialEq, Eq, Hash, ::prost::Message)]
pub struct RevokeRequest {
    /// The caller's id for this revocation.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// The user.
    #[prost(string, tag = "2")]
    pub user_id: String,
    /// The resource.
    #[prost(string, tag = "3")]
    pub resource_id: String,
}

/// `provisioner.v1.RevokeResponse`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, ::prost::Message)]
pub struct RevokeResponse {
    /// Whether there was a grant to revoke.
    #[prost(bool, tag = "1")]
    pub was_granted: bool,
}

/// The service's full name.
pub const SERVICE_NAME: &str = "provisioner.v1.Provisioner";
/// The path of `Grant`.
pub const GRANT_PATH: &str = "/provisioner.v1.Provisioner/Grant";
/// The path of `Revoke`.
pub const REVOKE_PATH: &str = "/provisioner.v1.Provisioner/Revoke";

/// A client of `provisioner.v1.Provisioner`.
#[derive(Debug, Clone)]
pub struct ProvisionerClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> ProvisionerClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as Body>::Error: Into<StdError> + Send,
{
    /// A client over `inner` (a `tonic::transport::Channel`).
    pub fn new(inner: T) -> Self {
        ProvisionerClient {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    async fn unary<Req, Resp>(
        &mut self,
        request: tonic::Request<Req>,
        path: &'static str,
        method: &'static str,
    ) -> Result<tonic::Response<Resp>, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        self.inner
            .ready()
            .await
            .map_err(|e| tonic::Status::unavailable(format!("service not ready: {}", e.into())))?;
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        let mut request = request;
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE_NAME, method));
        self.inner
            .unary(request, http::uri::PathAndQuery::from_static(path), codec)
            .await
    }

    /// `Grant`.
    ///
    /// # Errors
    ///
    /// The status the server (or the transport) answered.
    pub async fn grant(
        &mut self,
        request: tonic::Request<GrantRequest>,
    ) -> Result<tonic::Response<GrantResponse>, tonic::Status> {
        self.unary(request, GRANT_PATH, "Grant").await
    }

    /// `Revoke`.
    ///
    /// # Errors
    ///
    /// The status the server (or the transport) answered.
    pub async fn revoke(
        &mut self,
        request: tonic::Request<RevokeRequest>,
    ) -> Result<tonic::Response<RevokeResponse>, tonic::Status> {
        self.unary(request, REVOKE_PATH, "Revoke").await
    }
}

/// What a `provisioner.v1.Provisioner` implementation answers.
pub trait Provisioner: Send + Sync + 'static {
    /// `Grant`.
    fn grant(
        &self,
        request: tonic::Request<GrantRequest>,
    ) -> impl Future<Output = Result<tonic::Response<GrantResponse>, tonic::Status>> + Send;
    /// `Revoke`.
    fn revoke(
        &self,
        request: tonic::Request<RevokeRequest>,
    ) -> impl Future<Output = Result<tonic::Response<RevokeResponse>, tonic::Status>> + Send;
}

/// The server side: routes `Grant` and `Revoke` to a [`Provisioner`]; add it to a
/// `tonic::transport::Server`.
#[derive(Debug)]
pub struct ProvisionerServer<P> {
    inner: Arc<P>,
}

impl<P> ProvisionerServer<P> {
    /// Serves `inner`.
    pub fn from_arc(inner: Arc<P>) -> Self {
        ProvisionerServer { inner }
    }
}

impl<P> Clone for ProvisionerServer<P> {
    fn clone(&self) -> Self {
        ProvisionerServer {
            inner: self.inner.clone(),
        }
    }
}

impl<P> tonic::server::NamedService for ProvisionerServer<P> {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

struct GrantSvc<P>(Arc<P>);

impl<P: Provisioner> tonic::server::UnaryService<GrantRequest> for GrantSvc<P> {
    type Response = GrantResponse;
    type Future = BoxFuture<tonic::Response<GrantResponse>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<GrantRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.grant(request).await })
    }
}

struct RevokeSvc<P>(Arc<P>);

impl<P: Provisioner> tonic::server::UnaryService<RevokeRequest> for RevokeSvc<P> {
    type Response = RevokeResponse;
    type Future = BoxFuture<tonic::Response<RevokeResponse>, tonic::Status>;
    fn call(&mut self, request: tonic::Request<RevokeRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.revoke(request).await })
    }
}

impl<P, B> tonic::codegen::Service<http::Request<B>> for ProvisionerServer<P>
where
    P: Provisioner,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match req.uri().path() {
            GRANT_PATH => Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<GrantResponse, GrantRequest>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(GrantSvc(inner), req).await)
            }),
            REVOKE_PATH => Box::pin(async move {
                let codec = tonic_prost::ProstCodec::<RevokeResponse, RevokeRequest>::default();
                let mut grpc = tonic::server::Grpc::new(codec);
                Ok(grpc.unary(RevokeSvc(inner), req).await)
            }),
            _ => Box::pin(
                async move { Ok(tonic::Status::unimplemented("no such method").into_http()) },
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn messages_encode_with_the_proto_field_numbers() {
        let req = GrantRequest {
            request_id: "r".into(),
            user_id: "u".into(),
            resource_id: "g".into(),
        };
        // Field 1, 2 and 3, each length-delimited (wire type 2): tags 0x0a, 0x12, 0x1a.
        assert_eq!(
            req.encode_to_vec(),
            [0x0a, 1, b'r', 0x12, 1, b'u', 0x1a, 1, b'g']
        );
        assert_eq!(GrantRequest::decode(&req.encode_to_vec()[..]).unwrap(), req);
        let resp = RevokeResponse { was_granted: true };
        assert_eq!(resp.encode_to_vec(), [0x08, 1]);
    }
}
