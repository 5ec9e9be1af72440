//! The controller's operations endpoint as Prometheus and the kubelet see it: /metrics, /healthz, /readyz.

use std::{collections::BTreeMap, net::SocketAddr};

/// One scrape of /metrics, parsed into samples.
pub struct Scrape {
    pub text: String,
    samples: Vec<Sample>,
}

struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let samples = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(parse_sample).collect();
        Scrape { text, samples }
    }

    /// The sum of `name`'s samples whose labels include every one of `labels` (0 when there are none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).sum()
    }

    /// The one sample of `name` with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let wanted: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == wanted).map(|s| s.value)
    }

    fn matching<'a>(&'a self, name: &'a str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = f64> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.value)
    }
}

fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.trim_end_matches('}')),
        None => (series, ""),
    };
    let labels = labels
        .split("\",")
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label in {line}"));
            (k.to_string(), v.trim_matches('"').to_string())
        })
        .collect();
    Sample { name: name.to_string(), labels, value: value.parse().unwrap_or_else(|_| panic!("bad value in {line}")) }
}

pub async fn scrape(address: SocketAddr) -> Scrape {
    let response = reqwest::get(format!("http://{address}/metrics")).await.expect("GET /metrics");
    assert!(response.status().is_success(), "/metrics answered {}", response.status());
    Scrape::parse(response.text().await.unwrap())
}

/// The HTTP status of GET `path`.
pub async fn status(address: SocketAddr, path: &str) -> u16 {
    reqwest::get(format!("http://{address}{path}")).await.unwrap_or_else(|e| panic!("GET {path}: {e}")).status().as_u16()
}

/// Waits until GET `path` answers `expected`.
pub async fn wait_status(address: SocketAddr, path: &str, expected: u16, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let got = status(address, path).await;
        if got == expected {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{path} answered {got}, not {expected}, for {timeout:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
