//! The reply of Prometheus' instant query API (`/api/v1/query`), read down to
//! the one number a check compares.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The envelope of every API reply.
#[derive(Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

/// One series of an instant vector.
#[derive(Deserialize)]
struct Series {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// The one value of a query's reply, or why there is none; `query` is the
/// expression as sent, for the messages.
pub(crate) fn value(http_status: u16, body: &[u8], query: &str) -> Result<f64, String> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        format!("the server answered HTTP {http_status} with no query API reply ({e}): {text}")
    })?;
    if envelope.status != "success" {
        return Err(format!(
            "Prometheus refused `{query}`: {}: {}",
            envelope.error_type.as_deref().unwrap_or("error"),
            envelope.error.as_deref().unwrap_or("(no error text)")
        ));
    }
    // a success body under an error status (a proxy in front of Prometheus) is
    // no answer to trust
    if !(200..300).contains(&http_status) {
        return Err(format!(
            "the server answered `{query}` with HTTP {http_status} (and a success body)"
        ));
    }
    let data = envelope
        .data
        .ok_or_else(|| format!("Prometheus answered `{query}` with no data"))?;
    let text = match data.result_type.as_str() {
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| format!("a scalar that does not read: {e}"))?;
            v
        }
        "vector" => {
            let series: Vec<Series> = serde_json::from_value(data.result)
                .map_err(|e| format!("a vector that does not read: {e}"))?;
            match series.len() {
                0 => {
                    return Err(format!(
                        "`{query}` gave an empty result: no series matched (no traffic \
                         yet, a wrong label, or the target is not scraped)"
                    ))
                }
                1 => series.into_iter().next().expect("one series").value.1,
                n => {
                    let shown: Vec<String> =
                        series.iter().take(3).map(|s| labels(&s.metric)).collect();
                    return Err(format!(
                        "`{query}` gave {n} series ({}{}); it must give one: aggregate it, \
                         e.g. with sum(...)",
                        shown.join(", "),
                        if n > 3 { ", ..." } else { "" }
                    ));
                }
            }
        }
        other => {
            return Err(format!(
                "`{query}` gave a {other}; it must give a scalar or an instant vector \
                 of one series"
            ))
        }
    };
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{query}` gave the value {text:?}, which is not a number"))?;
    if value.is_nan() {
        return Err(format!(
            "`{query}` is NaN (a division by zero, e.g. a rate with no traffic in the window)"
        ));
    }
    Ok(value)
}

fn labels(metric: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}", pairs.join(", "))
}

#[cfg(test)]
mod tests {
    use super::value;

    #[test]
    fn reads_a_scalar_and_a_one_series_vector() {
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"0.25"]}}"#;
        assert_eq!(value(200, scalar, "q"), Ok(0.25));
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"group":"g"},"value":[1700000000,"+Inf"]}]}}"#;
        assert_eq!(value(200, vector, "q"), Ok(f64::INFINITY));
    }

    #[test]
    fn an_error_status_fails_whatever_the_body() {
        let scalar = br#"{"status":"success","data":{"resultType":"scalar","result":[1700000000.5,"0.25"]}}"#;
        for status in [500, 503, 404, 302] {
            let e = value(status, scalar, "q").unwrap_err();
            assert!(e.contains(&format!("HTTP {status}")), "{e}");
        }
        assert_eq!(value(203, scalar, "q"), Ok(0.25));
    }

    #[test]
    fn names_what_is_wrong() {
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert!(value(200, empty, "q").unwrap_err().contains("empty result"));
        let two = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"a":"1"},"value":[1,"1"]},{"metric":{"a":"2"},"value":[1,"2"]}]}}"#;
        let e = value(200, two, "q").unwrap_err();
        assert!(e.contains("2 series") && e.contains(r#"a="2""#), "{e}");
        let matrix = br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        assert!(value(200, matrix, "q").unwrap_err().contains("a matrix"));
        let refused = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert_eq!(
            value(400, refused, "q").unwrap_err(),
            "Prometheus refused `q`: bad_data: parse error"
        );
        let nan = br#"{"status":"success","data":{"resultType":"scalar","result":[1,"NaN"]}}"#;
        assert!(value(200, nan, "q").unwrap_err().contains("NaN"));
        assert!(value(502, b"<html>bad gateway</html>", "q")
            .unwrap_err()
            .contains("HTTP 502"));
    }
}
