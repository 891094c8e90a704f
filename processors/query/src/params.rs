//! Query-string parameters, checked one by one so a bad request says which parameter is wrong and
//! why, as Jaeger's query service does.

use std::collections::BTreeMap;

/// A 400 answer: which parameter and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter(pub String);

pub struct Params(BTreeMap<String, Vec<String>>);

impl Params {
    pub fn new(pairs: Vec<(String, String)>) -> Params {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in pairs {
            map.entry(k).or_default().push(v);
        }
        Params(map)
    }

    /// The parameter's value; empty counts as absent.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.last()).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.0.get(name).into_iter().flatten().map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, BadParameter> {
        self.text(name).ok_or_else(|| BadParameter(format!("parameter '{name}' is required")))
    }

    pub fn integer(&self, name: &str) -> Result<Option<i64>, BadParameter> {
        self.text(name)
            .map(|v| v.parse::<i64>().map_err(|_| BadParameter(format!("unable to parse param '{name}': `{v}` is not an integer"))))
            .transpose()
    }

    pub fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, BadParameter> {
        match self.integer(name)? {
            None => Ok(default),
            Some(n) if n < 0 => Err(BadParameter(format!("parameter '{name}' must not be negative, got {n}"))),
            Some(0) => Ok(default),
            Some(n) => Ok((n as usize).min(max)),
        }
    }

    pub fn duration_us(&self, name: &str) -> Result<Option<i64>, BadParameter> {
        self.text(name).map(|v| go_duration_us(v).map_err(|why| BadParameter(format!("unable to parse param '{name}': {why}")))).transpose()
    }

    /// A [start, end] range in µs from `start`/`end` (µs since the epoch) or `lookback` (a
    /// duration before `end`); by default the last `default_lookback_us`.
    pub fn time_range_us(&self, now_us: i64, default_lookback_us: i64) -> Result<(i64, i64), BadParameter> {
        let end = self.integer("end")?.unwrap_or(now_us);
        let start = match self.integer("start")? {
            Some(start) => start,
            None => match self.text("lookback").filter(|l| *l != "custom") {
                Some(_) => end - self.duration_us("lookback")?.unwrap_or(default_lookback_us),
                None => end - default_lookback_us,
            },
        };
        if start > end {
            return Err(BadParameter(format!("parameter 'start' ({start}) is after 'end' ({end})")));
        }
        Ok((start, end))
    }
}

/// A Go duration (`1.5ms`, `300us`, `2s`, `1m30s`), as Jaeger reads minDuration/maxDuration, in µs.
pub fn go_duration_us(text: &str) -> Result<i64, String> {
    let invalid = || format!("time: invalid duration \"{text}\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ns = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(invalid());
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| invalid())?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(format!("time: missing unit in duration \"{text}\"")),
            unit => return Err(format!("time: unknown unit \"{unit}\" in duration \"{text}\"")),
        };
        rest = &rest[unit_len..];
        total_ns += number * scale;
    }
    Ok((total_ns / 1e3) as i64)
}

/// Jaeger's `tags` parameter: a JSON object (`{"error":"true"}`, as Jaeger's UI sends it) or
/// logfmt (`error=true http.status_code=500 name="a b"`, as Grafana's Jaeger data source does).
pub fn tags(params: &Params) -> Result<Vec<(String, String)>, BadParameter> {
    let mut out = Vec::new();
    for text in params.all("tags").chain(params.all("tag")) {
        let text = text.trim();
        if text.starts_with('{') {
            let map: BTreeMap<String, serde_json::Value> =
                serde_json::from_str(text).map_err(|e| BadParameter(format!("unable to parse param 'tags': not a JSON object of tags: {e}")))?;
            for (k, v) in map {
                out.push((k, v.as_str().map_or_else(|| v.to_string(), str::to_string)));
            }
        } else if let Some((k, v)) = text.split_once(':').filter(|_| !text.contains('=')) {
            // Jaeger's `tag=key:value` form.
            out.push((k.to_string(), v.to_string()));
        } else {
            out.extend(logfmt(text).map_err(|why| BadParameter(format!("unable to parse param 'tags': {why}")))?);
        }
    }
    Ok(out)
}

fn logfmt(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("`{key}` has no value (expected key=value)"));
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated quote in the value of `{key}`")),
                    Some('"') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration_us("1.5ms"), Ok(1_500));
        assert_eq!(go_duration_us("1m30s"), Ok(90_000_000));
        assert_eq!(go_duration_us("300us"), Ok(300));
        assert_eq!(go_duration_us("250µs"), Ok(250));
        assert!(go_duration_us("12").unwrap_err().contains("missing unit"));
        assert!(go_duration_us("3 parsecs").is_err());
        assert!(go_duration_us("ms").is_err());
    }

    #[test]
    fn tags_in_logfmt_json_and_colon_form() {
        let params = Params::new(vec![("tags".into(), r#"error=true name="a b\"c" x="#.into())]);
        assert_eq!(tags(&params).unwrap(), vec![("error".into(), "true".into()), ("name".into(), "a b\"c".into()), ("x".into(), "".into())]);
        let params = Params::new(vec![("tags".into(), r#"{"http.status_code":"500","retry":true}"#.into())]);
        assert_eq!(tags(&params).unwrap(), vec![("http.status_code".into(), "500".into()), ("retry".into(), "true".into())]);
        let params = Params::new(vec![("tag".into(), "db.system:postgresql".into())]);
        assert_eq!(tags(&params).unwrap(), vec![("db.system".into(), "postgresql".into())]);
        assert!(tags(&Params::new(vec![("tags".into(), "novalue".into())])).is_err());
        assert!(tags(&Params::new(vec![("tags".into(), "{nope".into())])).is_err());
    }
}
