#![no_main]
//! No header value of any server ops talks to can panic it: the retry advice, the rate-limit
//! error, header lookups and the registry's challenge all take arbitrary headers.

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use trigger_ops::clients::http::{rate_limited, Response};

fuzz_target!(|data: &[u8]| {
    let Some((status, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let headers = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let r = Response {
        // Mostly 429 and 503, the statuses whose headers are read.
        status: match status[0] % 4 {
            0 => 429,
            1 => 503,
            _ => u16::from_be_bytes(*status),
        },
        headers,
        body: text.to_string(),
    };
    if let Some(wait) = r.advised_wait() {
        assert!(wait <= Duration::from_secs(3600));
    }
    let _ = rate_limited("fuzz", &r, None).to_string();
    for name in ["www-authenticate", "x-request-id", "retry-after"] {
        if let Some(v) = r.header(name) {
            let _ = trigger_ops::registry::token_url(v, "library/nginx");
        }
    }
    let _ = r.snippet();
});
