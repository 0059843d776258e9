//! Where a node finds the cluster's Redis: one address (`redis://host:port/`, `rediss://` with
//! TLS), or a set of Redis Sentinels that name the current master
//! (`redis+sentinel://host:26379,host:26380/service`). With Sentinels, the master is asked for
//! again whenever rounds fail (a failover moved it), so a node follows a failover by itself.

use redis::sentinel::{SentinelClient, SentinelServerType};

/// The longest `redis` setting accepted.
const MAX_LEN: usize = 2_048;
/// Most Sentinels listed.
const MAX_SENTINELS: usize = 16;

/// A `redis` setting that is not one of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("redis: {0}")]
pub struct TargetError(&'static str);

/// Where the cluster's Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One Redis, at this URL.
    Direct(String),
    /// The master Sentinels name for `service`.
    Sentinel {
        /// The Sentinels, as `redis://host:port` URLs.
        sentinels: Vec<String>,
        /// The monitored master's name.
        service: String,
    },
}

impl RedisTarget {
    /// Parses a `redis` setting.
    pub fn parse(raw: &str) -> Result<RedisTarget, TargetError> {
        if raw.len() > MAX_LEN {
            return Err(TargetError("too long"));
        }
        if raw.starts_with("redis://") || raw.starts_with("rediss://") {
            return Ok(RedisTarget::Direct(raw.to_owned()));
        }
        let Some(rest) = raw.strip_prefix("redis+sentinel://") else {
            return Err(TargetError(
                "must be a redis://, rediss:// or redis+sentinel://host:port,.../service URL",
            ));
        };
        let (hosts, service) = rest
            .split_once('/')
            .ok_or(TargetError("redis+sentinel:// needs /service at the end"))?;
        let service = service.trim_end_matches('/');
        if service.is_empty()
            || !service.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(TargetError("the Sentinel service name must be letters, digits, - _ ."));
        }
        let sentinels: Vec<String> =
            hosts.split(',').map(|h| sentinel_url(h.trim())).collect::<Result<_, _>>()?;
        if sentinels.is_empty() || sentinels.len() > MAX_SENTINELS {
            return Err(TargetError("list 1 to 16 Sentinels"));
        }
        Ok(RedisTarget::Sentinel { sentinels, service: service.to_owned() })
    }

    /// A client for the Redis to use now (for Sentinels: the master they name now).
    pub async fn client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            RedisTarget::Direct(url) => redis::Client::open(url.as_str()),
            RedisTarget::Sentinel { sentinels, service } => {
                let mut sentinel = SentinelClient::build(
                    sentinels.clone(),
                    service.clone(),
                    None,
                    SentinelServerType::Master,
                )?;
                sentinel.async_get_client().await
            }
        }
    }

    /// Whether the master may move (then a node asks again after failed rounds).
    pub fn follows_failover(&self) -> bool {
        matches!(self, RedisTarget::Sentinel { .. })
    }
}

/// `host:port` (a name, an IPv4 address or a bracketed IPv6 one) as a `redis://` URL.
fn sentinel_url(hostport: &str) -> Result<String, TargetError> {
    let (host, port) =
        hostport.rsplit_once(':').ok_or(TargetError("a Sentinel needs host:port"))?;
    port.parse::<u16>().map_err(|_| TargetError("a Sentinel's port must be a number"))?;
    let name_ok = |h: &str| {
        !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
    };
    let v6_ok = |h: &str| {
        h.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    };
    if !(name_ok(host) || v6_ok(host)) {
        return Err(TargetError("a Sentinel's host must be a name or an address"));
    }
    Ok(format!("redis://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_forms_parse() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379/"),
            Ok(RedisTarget::Direct("redis://127.0.0.1:6379/".into()))
        );
        assert_eq!(
            RedisTarget::parse("redis+sentinel://10.0.0.1:26379,sentinel-2:26379,[::1]:26380/th"),
            Ok(RedisTarget::Sentinel {
                sentinels: vec![
                    "redis://10.0.0.1:26379".into(),
                    "redis://sentinel-2:26379".into(),
                    "redis://[::1]:26380".into()
                ],
                service: "th".into()
            })
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        for bad in [
            "http://x",
            "redis+sentinel://h:1",
            "redis+sentinel://h:1/",
            "redis+sentinel://h/th",
            "redis+sentinel://h:port/th",
            "redis+sentinel://h x:1/th",
            "redis+sentinel://:1/th",
            "redis+sentinel://h:1/t h",
        ] {
            assert!(RedisTarget::parse(bad).is_err(), "{bad}");
        }
        let many = vec!["h:1"; 17].join(",");
        assert!(RedisTarget::parse(&format!("redis+sentinel://{many}/th")).is_err());
    }

    proptest! {
        #[test]
        fn any_setting_parses_or_is_refused_without_panic(raw in ".{0,300}") {
            let _ = RedisTarget::parse(&raw);
            let sentinel = format!("redis+sentinel://{raw}");
            let _ = RedisTarget::parse(&sentinel);
        }
    }
}
