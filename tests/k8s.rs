//! The Kubernetes manifests under k8s/: every overlay renders with `kubectl kustomize`, and every
//! object it renders is valid: built-in kinds against the Kubernetes API schemas of a pinned
//! version (tests/k8s/validate.py with kubernetes-validate, in the test virtualenv `make python`
//! makes), the Strimzi, KEDA and Prometheus-operator resources against the types
//! kube-custom-resources-rs generates from the CRDs those projects publish (an unknown field, a
//! missing required one or a value of the wrong type is an error). What no schema can say is checked here against
//! k8s/base/topology.yaml: each processor has its Deployment, probes and PodDisruptionBudget, the
//! assembler's memory limit holds its budget, KEDA never scales a group past its input's
//! partitions, the Strimzi topics and the PrometheusRule are what topology.yaml and
//! deploy/prometheus say.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;
use support::repo_path;
use tracepipe::topology::Topology;

const OVERLAYS: [&str; 2] = ["dev", "production"];

/// The custom resources the overlays use, each checked against its CRD's generated type.
const CUSTOM_RESOURCES: [&str; 5] = [
    "kafka.strimzi.io/v1/KafkaTopic",
    "keda.sh/v1alpha1/ScaledObject",
    "keda.sh/v1alpha1/TriggerAuthentication",
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
];

/// Problems of `object` as a `T`: fields the type does not have (which the API server would
/// prune), and the first error deserializing it, each with its path.
fn typed_problems<T: serde::de::DeserializeOwned>(object: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut unknown = |path: serde_ignored::Path<'_>| {
        // The generated type takes apiVersion and kind from its attributes, not the document
        // (which custom_resource_problems has matched already).
        let path = path.to_string();
        if path != "apiVersion" && path != "kind" {
            problems.push(format!("{path}: unknown field"));
        }
    };
    let result: Result<T, _> = serde_path_to_error::deserialize(serde_ignored::Deserializer::new(object.clone(), &mut unknown));
    if let Err(error) = result {
        problems.push(format!("{}: {}", error.path(), error.inner()));
    }
    problems
}

fn custom_resource_problems(object: &Value) -> Option<Vec<String>> {
    use kcr_kafka_strimzi_io::v1::kafkatopics::KafkaTopic;
    use kcr_keda_sh::v1alpha1::scaledobjects::ScaledObject;
    use kcr_keda_sh::v1alpha1::triggerauthentications::TriggerAuthentication;
    use kcr_monitoring_coreos_com::v1::prometheusrules::PrometheusRule;
    use kcr_monitoring_coreos_com::v1::servicemonitors::ServiceMonitor;
    let kind = format!("{}/{}", object["apiVersion"].as_str()?, object["kind"].as_str()?);
    Some(match kind.as_str() {
        "kafka.strimzi.io/v1/KafkaTopic" => typed_problems::<KafkaTopic>(object),
        "keda.sh/v1alpha1/ScaledObject" => typed_problems::<ScaledObject>(object),
        "keda.sh/v1alpha1/TriggerAuthentication" => typed_problems::<TriggerAuthentication>(object),
        "monitoring.coreos.com/v1/ServiceMonitor" => typed_problems::<ServiceMonitor>(object),
        "monitoring.coreos.com/v1/PrometheusRule" => typed_problems::<PrometheusRule>(object),
        _ => return None,
    })
}

fn render(overlay: &str) -> (PathBuf, Vec<Value>) {
    let output = Command::new("kubectl")
        .args(["kustomize", &format!("k8s/overlays/{overlay}")])
        .current_dir(repo_path(""))
        .output()
        .expect("kubectl runs (`make kubectl` says where it comes from)");
    assert!(output.status.success(), "kubectl kustomize k8s/overlays/{overlay}: {}", String::from_utf8_lossy(&output.stderr));
    let dir = repo_path("target/tmp/k8s");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&file, &output.stdout).unwrap();
    (file, documents(&String::from_utf8(output.stdout).unwrap()))
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text).map(|doc| Value::deserialize(doc).unwrap()).filter(|v| !v.is_null()).collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// Bytes of a Kubernetes quantity like 768Mi or 1Gi.
fn quantity_bytes(text: &str) -> u64 {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let scale = match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "k" => 1000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        other => panic!("quantity unit {other}"),
    };
    number.parse::<u64>().unwrap() * scale
}

fn cluster_topology() -> (Topology, Value) {
    let text = std::fs::read_to_string(repo_path("k8s/base/topology.yaml")).unwrap();
    let topology = Topology::from_yaml(&text).unwrap_or_else(|problems| panic!("k8s/base/topology.yaml: {problems}"));
    (topology, serde_yaml_ng::from_str(&text).unwrap())
}

#[test]
fn every_overlay_renders_and_is_valid_against_the_api_and_crd_schemas() {
    let python = repo_path("target/python/bin/python");
    let files: Vec<PathBuf> = OVERLAYS.iter().map(|overlay| render(overlay).0).collect();
    let output = Command::new(&python)
        .arg(repo_path("tests/k8s/validate.py"))
        .args(["--typed-elsewhere", &CUSTOM_RESOURCES.join(",")])
        .args(&files)
        .output()
        .expect("the test virtualenv (make python)");
    let report = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    eprintln!("{report}");
    assert!(output.status.success(), "the rendered overlays are not valid:\n{report}");

    let mut problems = Vec::new();
    let mut checked = BTreeMap::<String, usize>::new();
    for overlay in OVERLAYS {
        for object in render(overlay).1 {
            let Some(found) = custom_resource_problems(&object) else { continue };
            *checked.entry(format!("{}/{}", object["apiVersion"].as_str().unwrap(), object["kind"].as_str().unwrap())).or_default() += 1;
            let name = object["metadata"]["name"].as_str().unwrap_or("?").to_string();
            problems.extend(found.into_iter().map(|problem| format!("{overlay}: {}/{name}: {problem}", object["kind"].as_str().unwrap())));
        }
    }
    eprintln!("custom resources checked against their CRDs' types: {checked:?}");
    assert!(problems.is_empty(), "custom resources that do not match their CRDs:\n{}", problems.join("\n"));
    assert_eq!(checked.keys().map(String::as_str).collect::<BTreeSet<_>>(), CUSTOM_RESOURCES.into_iter().collect(), "every custom resource kind is checked");
}

/// The typed check finds what the API server would refuse or prune.
#[test]
fn a_custom_resource_with_an_unknown_field_or_a_wrong_type_has_problems() {
    let topic: Value = serde_json::json!({
        "apiVersion": "kafka.strimzi.io/v1", "kind": "KafkaTopic",
        "metadata": { "name": "t" },
        "spec": { "partitions": 12, "replicas": 3, "retention": "1d" }
    });
    assert_eq!(custom_resource_problems(&topic).unwrap(), ["spec.retention: unknown field"]);
    let mut topic = topic;
    topic["spec"] = serde_json::json!({ "partitions": "12" });
    let problems = custom_resource_problems(&topic).unwrap();
    assert!(problems.iter().any(|p| p.starts_with("spec.partitions: invalid type")), "{problems:?}");
    let scaled: Value = serde_json::json!({ "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": { "name": "s" }, "spec": { "triggers": [] } });
    let problems = custom_resource_problems(&scaled).unwrap();
    assert!(problems.iter().any(|p| p.contains("scaleTargetRef")), "a required field: {problems:?}");
}

#[test]
fn every_processor_has_its_deployment_probes_budget_and_safe_pod() {
    let (topology, raw) = cluster_topology();
    let processors: Vec<&str> = raw["processors"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(processors.len(), tracepipe::registry::PROCESSORS.len(), "the cluster runs every processor this build has");
    for overlay in OVERLAYS {
        let (_, objects) = render(overlay);
        assert_eq!(of_kind(&objects, "Deployment").len(), processors.len(), "{overlay}: one Deployment per processor");
        for processor in &processors {
            let deployment = named(&objects, "Deployment", &format!("tracepipe-{processor}"));
            let pod = &deployment["spec"]["template"]["spec"];
            let container = &pod["containers"][0];
            let at = format!("{overlay}: tracepipe-{processor}");
            assert_eq!(container["args"], serde_json::json!(["run", processor]), "{at}");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready", "{at}");
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz", "{at}");
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{at}");
            assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true, "{at}");
            assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{at}");
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
            let drain = tracepipe_runtime::PipelineSettings::new(topology.kafka.clone(), "", vec![], vec![], "").drain_deadline;
            assert!(grace > drain.as_secs() + 10, "{at}: termination grace {grace}s must outlast the drain deadline {drain:?} and a revoke");
            assert!(container["resources"]["limits"]["memory"].is_string(), "{at}: a memory limit");
            let budget = named(&objects, "PodDisruptionBudget", &format!("tracepipe-{processor}"));
            assert_eq!(budget["spec"]["selector"]["matchLabels"], deployment["spec"]["selector"]["matchLabels"], "{at}");
        }
        // The listeners bind every interface, or probes and Services cannot reach them.
        assert_eq!(raw["admin"]["listen"], "0.0.0.0:9464");
        assert_eq!(raw["processors"]["query"]["listen"], "0.0.0.0:16686");
        assert_eq!(raw["processors"]["gateway"]["grpc_listen"], "0.0.0.0:4317");
        assert_eq!(raw["processors"]["gateway"]["http_listen"], "0.0.0.0:4318");
        for service in ["tracepipe-gateway", "tracepipe-query", "tracepipe-metrics"] {
            named(&objects, "Service", service);
        }
    }
}

#[test]
fn the_assembler_limit_holds_its_memory_budget() {
    let (_, raw) = cluster_topology();
    let budget = raw["processors"]["assembler"]["memory_budget"].as_str().unwrap().parse::<bytesize::ByteSize>().unwrap().as_u64();
    for overlay in OVERLAYS {
        let (_, objects) = render(overlay);
        let assembler = named(&objects, "Deployment", "tracepipe-assembler");
        let limit = quantity_bytes(assembler["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"].as_str().unwrap());
        assert!(limit >= budget / 4 * 5, "{overlay}: the assembler's limit {limit} is under memory_budget {budget} and a quarter; it would refuse to start");
    }
}

#[test]
fn keda_scales_each_consumer_group_on_its_inputs_never_past_their_partitions() {
    let (topology, raw) = cluster_topology();
    let (_, objects) = render("production");
    let scaled = of_kind(&objects, "ScaledObject");
    let consumers: BTreeMap<&str, &Value> = raw["processors"].as_object().unwrap().iter().filter(|(_, section)| section.get("group").is_some()).map(|(name, section)| (name.as_str(), section)).collect();
    assert_eq!(scaled.len(), consumers.len(), "one ScaledObject per consumer group");
    for (processor, section) in consumers {
        let object = named(&objects, "ScaledObject", &format!("tracepipe-{processor}"));
        assert_eq!(object["spec"]["scaleTargetRef"]["name"], format!("tracepipe-{processor}"));
        let inputs: BTreeSet<String> = match (&section.get("input"), &section.get("inputs")) {
            (Some(input), _) => [input.as_str().unwrap().to_string()].into(),
            (_, Some(Value::Array(list))) => list.iter().map(|i| i["topic"].as_str().unwrap().to_string()).collect(),
            (_, Some(Value::Object(map))) => map.values().map(|t| t.as_str().unwrap().to_string()).collect(),
            _ => panic!("{processor} has no input"),
        };
        let triggers: BTreeSet<String> = object["spec"]["triggers"].as_array().unwrap().iter().map(|t| t["metadata"]["topic"].as_str().unwrap().to_string()).collect();
        assert_eq!(triggers, inputs, "{processor}: a lag trigger per input topic");
        for trigger in object["spec"]["triggers"].as_array().unwrap() {
            assert_eq!(trigger["metadata"]["consumerGroup"], section["group"], "{processor}");
        }
        let partitions = inputs.iter().map(|topic| topology.topics[topic].partitions).max().unwrap();
        let max = object["spec"]["maxReplicaCount"].as_i64().unwrap();
        assert!(max as i32 <= partitions, "{processor}: maxReplicaCount {max} is more than its inputs' {partitions} partitions");
    }
    for hpa in ["tracepipe-gateway", "tracepipe-query"] {
        let object = named(&objects, "HorizontalPodAutoscaler", hpa);
        assert_eq!(object["spec"]["metrics"][0]["resource"]["name"], "cpu");
    }
}

#[test]
fn strimzi_topics_are_generated_from_the_topology() {
    let generated = Command::new(env!("CARGO_BIN_EXE_tracepipe"))
        .args(["topics", "manifest", "-t", "k8s/base/topology.yaml"])
        .current_dir(repo_path(""))
        .output()
        .unwrap();
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let committed = std::fs::read_to_string(repo_path("k8s/components/strimzi-topics/topics.yaml")).unwrap();
    assert_eq!(
        String::from_utf8(generated.stdout).unwrap(),
        committed,
        "k8s/components/strimzi-topics/topics.yaml is stale: tracepipe topics manifest -t k8s/base/topology.yaml -o k8s/components/strimzi-topics/topics.yaml"
    );
    let (topology, _) = cluster_topology();
    let (_, objects) = render("production");
    let topics: BTreeSet<String> = of_kind(&objects, "KafkaTopic")
        .iter()
        .map(|t| t["spec"].get("topicName").unwrap_or(&t["metadata"]["name"]).as_str().unwrap().to_string())
        .collect();
    assert_eq!(topics, topology.topics.keys().cloned().collect::<BTreeSet<_>>());
}

#[test]
fn the_prometheus_rule_is_deploy_prometheus_rules() {
    let rules: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(repo_path("deploy/prometheus/tracepipe-rules.yml")).unwrap()).unwrap();
    let (_, objects) = render("production");
    let rule = named(&objects, "PrometheusRule", "tracepipe");
    assert_eq!(rule["spec"]["groups"], rules["groups"], "k8s/components/prometheus-operator/prometheusrule.yaml differs from deploy/prometheus/tracepipe-rules.yml");
    named(&objects, "ServiceMonitor", "tracepipe");
}

#[test]
fn production_takes_its_credentials_from_secrets_and_dev_keeps_sqlite_on_a_claim() {
    let (_, production) = render("production");
    let (_, dev) = render("dev");
    for deployment in of_kind(&production, "Deployment") {
        let env = deployment["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap();
        let secret = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| e["valueFrom"]["secretKeyRef"]["name"].clone());
        assert_eq!(secret("TRACEPIPE_KAFKA_SASL_PASSWORD"), Some("tracepipe-kafka".into()));
        assert_eq!(secret("TRACEPIPE_STORAGE_URL"), Some("tracepipe-postgres".into()));
        assert!(deployment["spec"]["template"]["spec"]["volumes"].as_array().unwrap().iter().all(|v| v["name"] != "data"), "no SQLite volume");
    }
    for name in ["tracepipe-sink", "tracepipe-query", "tracepipe-slo", "tracepipe-trends"] {
        let volumes = named(&dev, "Deployment", name)["spec"]["template"]["spec"]["volumes"].as_array().unwrap().clone();
        let data = volumes.iter().find(|v| v["name"] == "data").unwrap();
        assert_eq!(data["persistentVolumeClaim"]["claimName"], "tracepipe-data", "{name}");
        assert!(data.get("emptyDir").is_none(), "{name}");
    }
    for deployment in of_kind(&dev, "Deployment") {
        assert_eq!(deployment["spec"]["replicas"], 1);
    }
    // What KEDA or an HPA scales has no replica count of its own for an apply to reset.
    let autoscaled: BTreeSet<String> = of_kind(&production, "ScaledObject")
        .into_iter()
        .chain(of_kind(&production, "HorizontalPodAutoscaler"))
        .map(|o| o["spec"]["scaleTargetRef"]["name"].as_str().unwrap().to_string())
        .collect();
    for deployment in of_kind(&production, "Deployment") {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        assert_eq!(deployment["spec"].get("replicas").is_none(), autoscaled.contains(name), "{name}: replicas {:?}", deployment["spec"].get("replicas"));
        assert_eq!(deployment["metadata"]["namespace"], "tracepipe", "{name}");
    }
    // Strimzi's Topic Operator watches the Kafka cluster's namespace.
    for topic in of_kind(&production, "KafkaTopic") {
        assert_eq!(topic["metadata"]["namespace"], "kafka", "{topic}");
    }
    // Service links would put TRACEPIPE_KAFKA_BOOTSTRAP_SERVICE_HOST and the like beside a
    // Strimzi cluster named tracepipe in the same namespace.
    for overlay in [&production, &dev] {
        for deployment in of_kind(overlay, "Deployment").into_iter().chain(of_kind(overlay, "Job")) {
            assert_eq!(deployment["spec"]["template"]["spec"]["enableServiceLinks"], false, "{}", deployment["metadata"]["name"]);
        }
    }
}
