//! The compiled form of a filter: a flat list of comparisons, each with where to go next when
//! it holds and when it does not.
//!
//! `&&`, `||` and `!` disappear at compile time: `a && b` sends `a`'s "true" to `b` and its
//! "false" to the answer false; `a || b` the other way round; `!a` swaps `a`'s two exits. So
//! evaluation is a loop over comparisons with short-circuiting and no stack, and since every
//! jump goes forward it ends after at most one visit of each comparison. Nothing is allocated.

use super::parse::{Cmp, CmpOp, Expr, Operand};
use super::view::PulseView;

/// Where evaluation goes after a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Test(u32),
    Accept,
    Reject,
}

/// A number a test reads.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Literal(f64),
    Coherence,
    Criticality,
    Eigenvalue(u32),
    EigenvalueCount,
}

/// A string a test reads.
#[derive(Debug, Clone, PartialEq)]
enum Text {
    Literal(Box<str>),
    Producer,
    Topic,
}

#[derive(Debug, Clone, PartialEq)]
enum Test {
    Num {
        lhs: Num,
        op: CmpOp,
        rhs: Num,
    },
    /// `equal` is true for `==`, false for `!=`.
    Text {
        lhs: Text,
        equal: bool,
        rhs: Text,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Step {
    test: Test,
    if_true: Next,
    if_false: Next,
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    steps: Vec<Step>,
}

impl Program {
    pub fn compile(expr: &Expr) -> Self {
        let mut steps = Vec::with_capacity(count_tests(expr));
        emit(expr, Next::Accept, Next::Reject, &mut steps);
        Self { steps }
    }

    /// Evaluates the program over one pulse.
    #[inline]
    pub fn eval(&self, view: &PulseView<'_>) -> bool {
        let mut at = 0usize;
        loop {
            let Some(step) = self.steps.get(at) else {
                // Unreachable for a compiled program; refusing is the safe answer.
                return false;
            };
            let next = if test(&step.test, view) {
                step.if_true
            } else {
                step.if_false
            };
            match next {
                Next::Test(i) => at = i as usize,
                Next::Accept => return true,
                Next::Reject => return false,
            }
        }
    }

    /// Comparisons in the program.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

fn count_tests(expr: &Expr) -> usize {
    match expr {
        Expr::Cmp(_) => 1,
        Expr::Not(inner) => count_tests(inner),
        Expr::All(items) | Expr::Any(items) => items.iter().map(count_tests).sum(),
    }
}

/// Appends the tests of `expr`, which start at `steps.len()`, leaving to `if_true` when it
/// holds and to `if_false` when it does not.
fn emit(expr: &Expr, if_true: Next, if_false: Next, steps: &mut Vec<Step>) {
    match expr {
        Expr::Cmp(cmp) => steps.push(Step {
            test: lower(cmp),
            if_true,
            if_false,
        }),
        Expr::Not(inner) => emit(inner, if_false, if_true, steps),
        Expr::All(items) | Expr::Any(items) => {
            let all = matches!(expr, Expr::All(_));
            let (last, rest) = items.split_last().expect("a list has two or more items");
            for item in rest {
                // The item's tests start here; the next item's start right after them.
                let next = Next::Test((steps.len() + count_tests(item)) as u32);
                if all {
                    emit(item, next, if_false, steps);
                } else {
                    emit(item, if_true, next, steps);
                }
            }
            emit(last, if_true, if_false, steps);
        }
    }
}

fn lower(cmp: &Cmp) -> Test {
    if cmp.lhs.is_string() {
        Test::Text {
            lhs: text(&cmp.lhs),
            equal: cmp.op == CmpOp::Eq,
            rhs: text(&cmp.rhs),
        }
    } else {
        Test::Num {
            lhs: num(&cmp.lhs),
            op: cmp.op,
            rhs: num(&cmp.rhs),
        }
    }
}

fn num(operand: &Operand) -> Num {
    match operand {
        Operand::Number(n) => Num::Literal(*n),
        Operand::Coherence => Num::Coherence,
        Operand::Criticality => Num::Criticality,
        Operand::Eigenvalue(i) => Num::Eigenvalue(*i),
        Operand::EigenvalueCount => Num::EigenvalueCount,
        // The parser refuses mixed comparisons; a string here would be a bug upstream.
        Operand::Str(_) | Operand::Producer | Operand::Topic => Num::Literal(f64::NAN),
    }
}

fn text(operand: &Operand) -> Text {
    match operand {
        Operand::Str(s) => Text::Literal(s.as_str().into()),
        Operand::Producer => Text::Producer,
        Operand::Topic => Text::Topic,
        _ => Text::Literal("".into()),
    }
}

#[inline]
fn test(test: &Test, view: &PulseView<'_>) -> bool {
    match test {
        Test::Num { lhs, op, rhs } => match (number(lhs, view), number(rhs, view)) {
            (Some(a), Some(b)) => compare(a, *op, b),
            _ => false,
        },
        Test::Text { lhs, equal, rhs } => (string(lhs, view) == string(rhs, view)) == *equal,
    }
}

#[inline]
fn number(n: &Num, view: &PulseView<'_>) -> Option<f64> {
    match *n {
        Num::Literal(v) => Some(v),
        Num::Coherence => Some(view.coherence),
        Num::Criticality => Some(view.criticality),
        Num::Eigenvalue(i) => view.eigenvalue(i as usize),
        Num::EigenvalueCount => Some(view.eigenvalue_count() as f64),
    }
}

#[inline]
fn string<'a>(t: &'a Text, view: &PulseView<'a>) -> &'a str {
    match t {
        Text::Literal(s) => s,
        Text::Producer => view.producer,
        Text::Topic => view.topic,
    }
}

/// IEEE comparison, except that a NaN on either side makes every operator false, `!=`
/// included.
#[inline]
pub fn compare(a: f64, op: CmpOp, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return false;
    }
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
    }
}
