//! An output the broker refuses for good (MSG_SIZE_TOO_LARGE, as a topic whose max.message.bytes
//! is below the record answers) goes to the dead-letter topic with the reason and the input
//! position it was derived from, and the input behind it is committed only once the DLQ has it.
//! librdkafka's mock cluster answers the pipeline's first Produce request with that error; Tansu
//! does not enforce max.message.bytes, so this cannot be shown against it.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;
use tokio_util::sync::CancellationToken;
use tracepipe_runtime::{dlq, Emitter, Health, InputRecord, KafkaSettings, OutputId, Pipeline, PipelineSettings, Poison, Processor, UnixNanos};

/// Forwards every input record to its one output.
struct Forward;

impl Processor for Forward {
    fn name(&self) -> &'static str {
        "forward"
    }

    fn on_input(&mut self, input: &InputRecord<'_>, _now: UnixNanos, out: &mut Emitter) -> Result<(), Poison> {
        out.emit(OutputId(0), b"key", input.payload);
        Ok(())
    }
}

#[test]
fn an_output_the_broker_refuses_goes_to_the_dlq_with_its_source_position() {
    let cluster = MockCluster::new(1).unwrap();
    for topic in ["in", "out", "dlq"] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let brokers = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &brokers).create().unwrap();
    producer.send(BaseRecord::<[u8], [u8]>::to("in").payload(&b"a span"[..])).map_err(|(e, _)| e).unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    // The next Produce request, the pipeline's, is refused as too large.
    cluster.request_errors(RDKafkaApiKey::Produce, &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE]);

    let settings = PipelineSettings::new(KafkaSettings::new(&brokers), "forward", vec!["in".into()], vec!["out".into()], "dlq");
    let shutdown = CancellationToken::new();
    let pipeline = Pipeline::new(settings, Forward).spawn(shutdown.clone(), Health::default());

    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &brokers).set("group.id", "check").set("auto.offset.reset", "earliest").create().unwrap();
    consumer.subscribe(&["dlq"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let message = loop {
        assert!(Instant::now() < deadline, "nothing reached the dlq");
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            break message.detach();
        }
    };
    let header = |name: &str| {
        let headers = message.headers().expect("dlq headers");
        headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
    };
    assert_eq!(message.payload(), Some(&b"a span"[..]), "the refused output itself");
    assert_eq!(header(dlq::HEADER_KIND), "output_refused");
    assert_eq!(header(dlq::HEADER_OUTPUT_TOPIC), "out");
    assert_eq!((header(dlq::HEADER_SOURCE_TOPIC), header(dlq::HEADER_SOURCE_PARTITION), header(dlq::HEADER_SOURCE_OFFSET)), ("in".to_string(), "0".to_string(), "0".to_string()));
    assert!(header(dlq::HEADER_REASON).contains("refused an output"), "{}", header(dlq::HEADER_REASON));
    eprintln!("dead-lettered: {}", header(dlq::HEADER_REASON));
    shutdown.cancel();
    pipeline.join().unwrap().unwrap();
}
