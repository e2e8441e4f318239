//! An OTLP/gRPC receiver for the tests: what a collector would get from Ferry's processes — spans
//! and metrics, each with the `service.name` of the process that sent it — kept in memory.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures::stream;
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::{Metric, metric::Data},
    resource::v1::Resource,
    trace::v1::Span,
};
use tokio_util::sync::CancellationToken;

/// One span as received: who sent it and its ids as lowercase hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the sending process.
    pub service: String,
    /// The span's name.
    pub name: String,
    /// 32 hex characters.
    pub trace_id: String,
    /// 16 hex characters.
    pub span_id: String,
    /// 16 hex characters; empty for a root span.
    pub parent_span_id: String,
    /// The span's attributes, as strings.
    pub attributes: Vec<(String, String)>,
}

/// One data point of a counter, gauge or histogram as received: who sent it, the metric's name,
/// its attributes, and its value (a counter's sum, a gauge's value, a histogram's count).
#[derive(Debug, Clone)]
pub struct ReceivedPoint {
    /// `service.name` of the sending process.
    pub service: String,
    /// The metric's name.
    pub metric: String,
    /// The point's attributes, as strings.
    pub attributes: Vec<(String, String)>,
    /// A sum's value, or a histogram's count.
    pub value: f64,
}

#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    points: Mutex<Vec<ReceivedPoint>>,
}

/// A receiver listening on a free local port until dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    received: Arc<Received>,
    stop: CancellationToken,
}

impl OtlpReceiver {
    /// Listen on a free port of 127.0.0.1.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (received, stop) = (Arc::new(Received::default()), CancellationToken::new());
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::from_arc(Arc::new(Service(received.clone()))))
            .add_service(MetricsServiceServer::from_arc(Arc::new(Service(received.clone()))));
        let incoming = stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) });
        let shutdown = stop.clone().cancelled_owned();
        tokio::spawn(async move { router.serve_with_incoming_shutdown(incoming, shutdown).await });
        Ok(Self { address, received, stop })
    }

    /// The endpoint to hand a process: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Every metric data point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.received.points.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Service(Arc<Received>);

fn text(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn pairs(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes.iter().map(|kv| (kv.key.clone(), text(kv.value.as_ref()))).collect()
}

fn service_of(resource: Option<&Resource>) -> String {
    resource
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .map(|kv| text(kv.value.as_ref()))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn span(service: &str, span: &Span) -> ReceivedSpan {
    ReceivedSpan {
        service: service.to_owned(),
        name: span.name.clone(),
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        attributes: pairs(&span.attributes),
    }
}

fn number(point: &opentelemetry_proto::tonic::metrics::v1::NumberDataPoint) -> f64 {
    use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
    match point.value {
        Some(Value::AsInt(i)) => i as f64,
        Some(Value::AsDouble(d)) => d,
        None => 0.0,
    }
}

fn points(service: &str, metric: &Metric) -> Vec<ReceivedPoint> {
    let point = |attributes: &[KeyValue], value: f64| ReceivedPoint {
        service: service.to_owned(),
        metric: metric.name.clone(),
        attributes: pairs(attributes),
        value,
    };
    match &metric.data {
        Some(Data::Sum(sum)) => sum.data_points.iter().map(|p| point(&p.attributes, number(p))).collect(),
        Some(Data::Gauge(gauge)) => gauge.data_points.iter().map(|p| point(&p.attributes, number(p))).collect(),
        Some(Data::Histogram(histogram)) => {
            histogram.data_points.iter().map(|p| point(&p.attributes, p.count as f64)).collect()
        }
        _ => Vec::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.spans.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = service_of(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.iter().map(|s| span(&service, s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tonic::async_trait]
impl MetricsService for Service {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut received = self.0.points.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for resource_metrics in request.into_inner().resource_metrics {
            let service = service_of(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in &scope.metrics {
                    received.extend(points(&service, metric));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse { partial_success: None }))
    }
}
