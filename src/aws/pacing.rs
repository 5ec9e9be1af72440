//! Client-side request rates. The controller paces its own AWS requests per region and API family, so that
//! when a fleet-wide incident starts dozens of captures at once they stay under AWS's throttling limits rather
//! than provoke them (a throttled account slows every other tool and person in it, responders included).
//!
//! Each family is a token bucket (kept as a GCRA reservation: a request that finds no token waits for the
//! next one instead of failing). Every HTTP attempt takes a token, SDK retries included, as AWS counts them.
//! AWS publishes its EC2 limits per API action (for example 100 tokens refilled at 20 per second for a
//! non-mutating action); ours are per family, so one family's limit bounds all its actions together and
//! stays below any single action's.

use std::{
    collections::BTreeMap,
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aws_sdk_s3::config::{SharedHttpClient, http::HttpRequest};
use aws_smithy_runtime_api::client::http::{HttpClient, HttpConnector, HttpConnectorFuture, SharedHttpConnector, http_client_fn};

/// A request rate: `per_second` on average, up to `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// The families and their default rates (override with --aws-rate-limit FAMILY=RATE[/BURST]).
pub const DEFAULTS: &[(&str, Rate)] = &[
    // Describe* calls: AWS's default for a single non-mutating action is 100 tokens, 20 per second.
    ("ec2-describe", Rate { per_second: 20.0, burst: 50 }),
    // Every other EC2 action (snapshots, security groups, interface changes, tags): AWS limits each action on
    // its own, so one rate for all of them together stays below any single action's.
    ("ec2-mutate", Rate { per_second: 10.0, burst: 50 }),
    // A capture polls its running command every 2 s: 50 captures acquiring at once poll 25 times a second.
    ("ssm", Rate { per_second: 25.0, burst: 50 }),
    // S3 takes thousands of requests per second per prefix; the controller's own are few (the instance's
    // part uploads go through presigned URLs and are not paced here).
    ("s3", Rate { per_second: 100.0, burst: 100 }),
    ("kms", Rate { per_second: 20.0, burst: 20 }),
    ("sts", Rate { per_second: 10.0, burst: 10 }),
    ("iam", Rate { per_second: 5.0, burst: 10 }),
    ("autoscaling", Rate { per_second: 5.0, burst: 10 }),
    ("elasticloadbalancing", Rate { per_second: 5.0, burst: 10 }),
];

/// `FAMILY=RATE[/BURST]`, as --aws-rate-limit takes it; a rate of 0 switches pacing off for the family.
#[derive(Debug, Clone, PartialEq)]
pub struct RateSetting {
    pub family: String,
    pub rate: Option<Rate>,
}

impl FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (family, value) = text.split_once('=').ok_or_else(|| format!("{text:?} is not FAMILY=RATE[/BURST]"))?;
        if !DEFAULTS.iter().any(|(f, _)| *f == family) {
            let known: Vec<&str> = DEFAULTS.iter().map(|(f, _)| *f).collect();
            return Err(format!("unknown API family {family:?} (known: {})", known.join(", ")));
        }
        let (rate, burst) = match value.split_once('/') {
            Some((rate, burst)) => (rate, Some(burst)),
            None => (value, None),
        };
        let per_second: f64 = rate.parse().map_err(|_| format!("{family}: rate {rate:?} is not a number of requests per second"))?;
        if !per_second.is_finite() || per_second < 0.0 {
            return Err(format!("{family}: rate {rate:?} must be 0 (unpaced) or more"));
        }
        if per_second == 0.0 {
            return Ok(RateSetting { family: family.into(), rate: None });
        }
        let burst = match burst {
            Some(b) => b.parse::<u32>().ok().filter(|b| *b >= 1).ok_or_else(|| format!("{family}: burst {b:?} must be a whole number of 1 or more"))?,
            None => per_second.ceil().max(1.0) as u32,
        };
        Ok(RateSetting { family: family.into(), rate: Some(Rate { per_second, burst }) })
    }
}

/// The rates in force: the defaults with `settings` applied over them.
pub fn rates(settings: &[RateSetting]) -> BTreeMap<&'static str, Option<Rate>> {
    let mut rates: BTreeMap<&'static str, Option<Rate>> = DEFAULTS.iter().map(|(f, r)| (*f, Some(*r))).collect();
    for setting in settings {
        if let Some((family, _)) = DEFAULTS.iter().find(|(f, _)| *f == setting.family) {
            rates.insert(family, setting.rate);
        }
    }
    rates
}

/// One family's bucket: the time at which the next request would be on schedule.
#[derive(Debug)]
struct Bucket {
    interval: Duration,
    tolerance: Duration,
    next: Option<Instant>,
}

impl Bucket {
    fn new(rate: Rate) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate.per_second);
        Bucket { interval, tolerance: interval * rate.burst.saturating_sub(1), next: None }
    }

    /// Takes the next token: how long the request must wait for it (zero when one is there).
    fn reserve(&mut self, now: Instant) -> Duration {
        let scheduled = self.next.map_or(now, |next| next.max(now));
        let allowed_at = scheduled.checked_sub(self.tolerance).unwrap_or(now);
        self.next = Some(scheduled + self.interval);
        allowed_at.saturating_duration_since(now)
    }
}

/// The buckets of one region's clients, shared by every capture in that region.
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    buckets: Arc<Mutex<BTreeMap<&'static str, Bucket>>>,
}

impl Pacer {
    pub fn new(rates: &BTreeMap<&'static str, Option<Rate>>) -> Self {
        let buckets = rates.iter().filter_map(|(family, rate)| Some((*family, Bucket::new((*rate)?)))).collect();
        Pacer { buckets: Arc::new(Mutex::new(buckets)) }
    }

    /// The wait before a request of `family` may go (zero for an unpaced family).
    pub fn reserve(&self, family: &str, now: Instant) -> Duration {
        self.buckets.lock().unwrap().get_mut(family).map_or(Duration::ZERO, |b| b.reserve(now))
    }

    /// `inner` with every request waiting for its family's token first. `service` is the client's IAM prefix.
    pub fn http_client(&self, service: &'static str, inner: SharedHttpClient) -> SharedHttpClient {
        let pacer = self.clone();
        http_client_fn(move |settings, components| {
            SharedHttpConnector::new(Paced { service, pacer: pacer.clone(), inner: inner.http_connector(settings, components) })
        })
    }
}

/// The EC2 query protocol names the action in its form body.
const DESCRIBE: &[u8] = b"Action=Describe";

/// The family of a request to `service`: EC2's Describe* calls apart from its other actions.
pub fn family(service: &'static str, body: Option<&[u8]>) -> &'static str {
    match service {
        "ec2" if body.is_some_and(|b| b.windows(DESCRIBE.len()).any(|w| w == DESCRIBE)) => "ec2-describe",
        "ec2" => "ec2-mutate",
        other => other,
    }
}

struct Paced {
    service: &'static str,
    pacer: Pacer,
    inner: SharedHttpConnector,
}

impl fmt::Debug for Paced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Paced").field("service", &self.service).finish()
    }
}

impl HttpConnector for Paced {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let family = family(self.service, request.body().bytes());
        let wait = self.pacer.reserve(family, Instant::now());
        let inner = self.inner.clone();
        HttpConnectorFuture::new(async move {
            if !wait.is_zero() {
                tracing::debug!(family, wait_ms = wait.as_millis() as u64, "AWS request paced");
                tokio::time::sleep(wait).await;
            }
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_and_the_rest_follows_at_the_rate() {
        let mut bucket = Bucket::new(Rate { per_second: 10.0, burst: 3 });
        let start = Instant::now();
        let waits: Vec<u64> = (0..6).map(|_| bucket.reserve(start).as_millis() as u64).collect();
        assert_eq!(waits, vec![0, 0, 0, 100, 200, 300]);
        // After a quiet spell the burst is back, and no more than the burst.
        let later = start + Duration::from_secs(10);
        let waits: Vec<u64> = (0..4).map(|_| bucket.reserve(later).as_millis() as u64).collect();
        assert_eq!(waits, vec![0, 0, 0, 100]);
    }

    #[test]
    fn a_steady_rate_under_the_limit_never_waits() {
        let mut bucket = Bucket::new(Rate { per_second: 5.0, burst: 1 });
        let start = Instant::now();
        for i in 0..20 {
            assert_eq!(bucket.reserve(start + Duration::from_millis(200 * i)), Duration::ZERO, "request {i}");
        }
    }

    #[test]
    fn settings_are_parsed_with_clear_errors() {
        assert_eq!("ssm=2/5".parse::<RateSetting>(), Ok(RateSetting { family: "ssm".into(), rate: Some(Rate { per_second: 2.0, burst: 5 }) }));
        assert_eq!("ec2-mutate=2.5".parse::<RateSetting>().unwrap().rate, Some(Rate { per_second: 2.5, burst: 3 }));
        assert_eq!("kms=0".parse::<RateSetting>().unwrap().rate, None, "0 switches pacing off");
        assert!("ec2=5".parse::<RateSetting>().unwrap_err().contains("unknown API family \"ec2\""));
        assert!("ssm".parse::<RateSetting>().unwrap_err().contains("FAMILY=RATE"));
        assert!("ssm=fast".parse::<RateSetting>().unwrap_err().contains("not a number"));
        assert!("ssm=1/0".parse::<RateSetting>().unwrap_err().contains("burst"));
        let rates = rates(&["ssm=2/5".parse().unwrap(), "kms=0".parse().unwrap()]);
        assert_eq!(rates["ssm"], Some(Rate { per_second: 2.0, burst: 5 }));
        assert_eq!(rates["kms"], None);
        assert_eq!(rates["ec2-describe"], Some(Rate { per_second: 20.0, burst: 50 }), "the others keep their defaults");
    }

    #[test]
    fn ec2_describe_calls_are_their_own_family() {
        assert_eq!(family("ec2", Some(b"Action=DescribeInstances&Version=2016-11-15")), "ec2-describe");
        assert_eq!(family("ec2", Some(b"Action=CreateSnapshots&Version=2016-11-15")), "ec2-mutate");
        assert_eq!(family("ssm", None), "ssm");
        for (name, _) in DEFAULTS {
            assert!(rates(&[]).contains_key(name));
        }
    }
}
