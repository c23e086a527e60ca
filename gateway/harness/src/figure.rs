//! Figure: one measured result of `corral bench` — what was measured, the value as printed, the
//! goal it is held against and the raw numbers for `--json`.

use serde_json::Value;

/// One measured figure.
pub(crate) struct Figure {
    /// What was measured.
    pub(crate) name: String,
    /// The result as printed in the table.
    pub(crate) value: String,
    /// The goal it is held against.
    pub(crate) goal: String,
    /// The raw numbers.
    pub(crate) json: Value,
}
