//! Reads of the derived tables that more than one reader needs.

use crate::{Param, Store, StoreError};

/// JSON bodies of the rollups of `kind` in [start_ms, end_ms], optionally of one service.
pub fn rollups(store: &mut Store, kind: &str, start_ms: i64, end_ms: i64, service: Option<&str>) -> Result<Vec<String>, StoreError> {
    let rows = match service {
        Some(service) => store.query(
            "SELECT body FROM rollups WHERE kind = $1 AND window_start_ms >= $2 AND window_start_ms <= $3 AND service = $4",
            &[Param::Text(kind), Param::Int(start_ms), Param::Int(end_ms), Param::Text(service)],
        )?,
        None => store.query(
            "SELECT body FROM rollups WHERE kind = $1 AND window_start_ms >= $2 AND window_start_ms <= $3",
            &[Param::Text(kind), Param::Int(start_ms), Param::Int(end_ms)],
        )?,
    };
    Ok(rows.into_iter().map(|mut r| r.swap_remove(0).into_text()).collect())
}
