//! Spectral filters on subscriptions (`Subscribe.filter`): a small boolean expression over a
//! pulse's spectral metadata, producer and topic, parsed and bounded at subscribe time and
//! evaluated on the subscriber's shard, before anything is queued.
//!
//! ```text
//! coherence >= 0.9 && criticality < 0.1
//! eigenvalues[0] > 1.5 || len(eigenvalues) >= 3
//! !(producer == "omega-7") && topic != "lab.rig.noise"
//! ```
//!
//! The grammar is in [`parse`]. Semantics, exactly:
//!
//! - Numbers are `f64`. Comparisons are IEEE comparisons, except that **a NaN on either side
//!   makes every comparison false, `!=` included**. `!` still negates: `!(coherence == 1)` is
//!   true for a NaN coherence.
//! - **A missing value makes its comparison false**, whatever the operator: `eigenvalues[5]`
//!   on a pulse with five or fewer eigenvalues.
//! - A pulse without `spectral` reads as protobuf's defaults: `coherence` and `criticality`
//!   0, no eigenvalues (`len(eigenvalues) == 0`). `producer` and `topic` are `""` when unset.
//! - Strings compare by bytes, with `==` and `!=` only.
//! - A pulse whose envelope cannot be walked (see [`view`]) is never admitted.
//!
//! Evaluation allocates nothing: [`PulseView`] borrows the encoded envelope, and the program
//! ([`eval`]) is a flat list of comparisons with forward jumps.

pub mod eval;
pub mod parse;
pub mod view;

pub use parse::{Cmp, CmpOp, Expr, Operand};
pub use view::{LazyView, PulseView};

use crate::config::Limits;

/// Bounds on a filter's text, checked before it is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterLimits {
    /// `limits.max_filter_bytes`.
    pub max_bytes: usize,
    /// `limits.max_filter_nodes`: operands, comparisons and `!`, `&&`, `||` operators.
    pub max_nodes: usize,
    /// `limits.max_filter_depth`: the deepest nesting of parentheses and `!`.
    pub max_depth: usize,
}

impl FilterLimits {
    pub fn from_config(limits: &Limits) -> Self {
        Self {
            max_bytes: limits.max_filter_bytes as usize,
            max_nodes: limits.max_filter_nodes as usize,
            max_depth: limits.max_filter_depth as usize,
        }
    }
}

/// Why a filter was refused. Every variant names the 0-based byte offset in the filter text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("at byte {max}: the filter is {len} bytes, more than limits.max_filter_bytes = {max}")]
    TooLong { len: usize, max: usize },
    #[error("at byte {pos}: {message}")]
    Syntax { pos: usize, message: String },
    #[error("at byte {pos}: {message}")]
    Type { pos: usize, message: String },
    #[error("at byte {pos}: the filter has more than limits.max_filter_nodes = {max} nodes")]
    TooManyNodes { pos: usize, max: usize },
    #[error("at byte {pos}: parentheses and `!` nest deeper than limits.max_filter_depth = {max}")]
    TooDeep { pos: usize, max: usize },
}

impl FilterError {
    /// The byte offset the error points at.
    pub fn pos(&self) -> usize {
        match self {
            FilterError::TooLong { max, .. } => *max,
            FilterError::Syntax { pos, .. }
            | FilterError::Type { pos, .. }
            | FilterError::TooManyNodes { pos, .. }
            | FilterError::TooDeep { pos, .. } => *pos,
        }
    }
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    program: eval::Program,
}

impl Filter {
    /// Parses and compiles `text`. The empty text is not a filter (see [`Filter::optional`]);
    /// a text of only whitespace is refused like any other incomplete one.
    pub fn compile(text: &str, limits: &FilterLimits) -> Result<Self, FilterError> {
        let expr = parse::parse(text, limits)?;
        Ok(Self {
            program: eval::Program::compile(&expr),
        })
    }

    /// `Some(filter)` for a non-empty text, `None` for `""` (every pulse passes).
    pub fn optional(text: &str, limits: &FilterLimits) -> Result<Option<Self>, FilterError> {
        if text.is_empty() {
            return Ok(None);
        }
        Self::compile(text, limits).map(Some)
    }

    /// True when the pulse passes.
    #[inline]
    pub fn matches(&self, view: &PulseView<'_>) -> bool {
        self.program.eval(view)
    }

    /// True when the pulse behind `lazy` passes; scans it on first use. A malformed envelope
    /// never passes.
    #[inline]
    pub fn admits(&self, lazy: &mut LazyView<'_>) -> bool {
        lazy.get().is_some_and(|view| self.matches(view))
    }

    /// Evaluates over an encoded `ArqonMessage`.
    pub fn matches_envelope(&self, envelope: &[u8]) -> bool {
        PulseView::scan(envelope).is_some_and(|view| self.matches(&view))
    }
}

#[cfg(test)]
mod tests;
