//! The filter language: lexer and recursive-descent parser into an [`Expr`] tree.
//!
//! ```text
//! expr       := all ( "||" all )*
//! all        := unary ( "&&" unary )*
//! unary      := "!" unary | "(" expr ")" | comparison
//! comparison := operand ( "==" | "!=" | "<" | "<=" | ">" | ">=" ) operand
//! operand    := number | string | "coherence" | "criticality" | "eigenvalues" "[" index "]"
//!             | "len" "(" "eigenvalues" ")" | "producer" | "topic"
//! number     := "-"? ( digits ( "." digits? )? | "." digits ) ( ("e" | "E") ("+" | "-")? digits )?
//! string     := '"' ( any character but '"' and '\' | '\"' | '\\' )* '"'
//! index      := digits                      (a non-negative integer that fits in 32 bits)
//! ```
//!
//! Both sides of a comparison must have the same type: numbers with numbers, strings with
//! strings, and strings only with `==` and `!=`. Whitespace (space, tab, CR, LF) separates
//! tokens anywhere. Every error names the 0-based byte offset where it was found.

use super::{FilterError, FilterLimits};

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Cmp(Cmp),
    Not(Box<Expr>),
    /// Every item holds (`a && b && ...`); at least two items.
    All(Vec<Expr>),
    /// Some item holds (`a || b || ...`); at least two items.
    Any(Vec<Expr>),
}

/// One comparison. The parser has checked that both operands have the same type and that
/// strings use only `==` and `!=`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmp {
    pub lhs: Operand,
    pub op: CmpOp,
    pub rhs: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A value a comparison reads.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Number(f64),
    Str(String),
    Coherence,
    Criticality,
    /// `eigenvalues[i]`.
    Eigenvalue(u32),
    /// `len(eigenvalues)`.
    EigenvalueCount,
    Producer,
    Topic,
}

impl Operand {
    pub fn is_string(&self) -> bool {
        matches!(self, Operand::Str(_) | Operand::Producer | Operand::Topic)
    }
}

/// Parses `text` within `limits`.
pub fn parse(text: &str, limits: &FilterLimits) -> Result<Expr, FilterError> {
    if text.len() > limits.max_bytes {
        return Err(FilterError::TooLong {
            len: text.len(),
            max: limits.max_bytes,
        });
    }
    let mut p = Parser {
        lexer: Lexer { text, at: 0 },
        peeked: None,
        limits,
        nodes: 0,
        depth: 0,
    };
    let expr = p.expr()?;
    let (pos, token) = p.next()?;
    if token != Token::End {
        return Err(syntax(pos, "`&&`, `||` or the end of the filter", &token));
    }
    Ok(expr)
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Number(f64),
    Str(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    And,
    Or,
    Not,
    Cmp(CmpOp),
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("`{name}`"),
            Token::Number(n) => format!("the number {n}"),
            Token::Str(_) => "a string".to_owned(),
            Token::LParen => "`(`".to_owned(),
            Token::RParen => "`)`".to_owned(),
            Token::LBracket => "`[`".to_owned(),
            Token::RBracket => "`]`".to_owned(),
            Token::And => "`&&`".to_owned(),
            Token::Or => "`||`".to_owned(),
            Token::Not => "`!`".to_owned(),
            Token::Cmp(op) => format!("`{}`", op.symbol()),
            Token::End => "the end of the filter".to_owned(),
        }
    }
}

fn syntax(pos: usize, expected: &str, found: &Token) -> FilterError {
    FilterError::Syntax {
        pos,
        message: format!("expected {expected}, found {}", found.describe()),
    }
}

struct Lexer<'a> {
    text: &'a str,
    at: usize,
}

impl Lexer<'_> {
    fn peek_byte(&self, offset: usize) -> Option<u8> {
        self.text.as_bytes().get(self.at + offset).copied()
    }

    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> Result<(usize, Token), FilterError> {
        while self
            .peek_byte(0)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        {
            self.at += 1;
        }
        let start = self.at;
        let Some(b) = self.peek_byte(0) else {
            return Ok((start, Token::End));
        };
        let two = |lexer: &mut Self, token: Token| {
            lexer.at += 2;
            Ok((start, token))
        };
        let one = |lexer: &mut Self, token: Token| {
            lexer.at += 1;
            Ok((start, token))
        };
        let second = self.peek_byte(1);
        let next_is = |c: u8| second == Some(c);
        match b {
            b'(' => one(self, Token::LParen),
            b')' => one(self, Token::RParen),
            b'[' => one(self, Token::LBracket),
            b']' => one(self, Token::RBracket),
            b'&' if next_is(b'&') => two(self, Token::And),
            b'|' if next_is(b'|') => two(self, Token::Or),
            b'&' | b'|' => Err(FilterError::Syntax {
                pos: start,
                message: format!(
                    "`{0}` alone is not an operator; did you mean `{0}{0}`?",
                    b as char
                ),
            }),
            b'=' if next_is(b'=') => two(self, Token::Cmp(CmpOp::Eq)),
            b'=' => Err(FilterError::Syntax {
                pos: start,
                message: "`=` alone is not an operator; did you mean `==`?".to_owned(),
            }),
            b'!' if next_is(b'=') => two(self, Token::Cmp(CmpOp::Ne)),
            b'!' => one(self, Token::Not),
            b'<' if next_is(b'=') => two(self, Token::Cmp(CmpOp::Le)),
            b'<' => one(self, Token::Cmp(CmpOp::Lt)),
            b'>' if next_is(b'=') => two(self, Token::Cmp(CmpOp::Ge)),
            b'>' => one(self, Token::Cmp(CmpOp::Gt)),
            b'"' => self.string(),
            b'-' | b'.' | b'0'..=b'9' => self.number(),
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let len = self.text.as_bytes()[start..]
                    .iter()
                    .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_')
                    .count();
                self.at += len;
                Ok((start, Token::Ident(self.text[start..self.at].to_owned())))
            }
            _ => {
                let c = self.text[start..].chars().next().unwrap_or('?');
                Err(FilterError::Syntax {
                    pos: start,
                    message: format!("unexpected character `{c}`"),
                })
            }
        }
    }

    fn string(&mut self) -> Result<(usize, Token), FilterError> {
        let start = self.at;
        self.at += 1;
        let mut value = String::new();
        loop {
            let rest = &self.text[self.at..];
            let Some(c) = rest.chars().next() else {
                return Err(FilterError::Syntax {
                    pos: start,
                    message: "string is not closed (a `\"` is missing)".to_owned(),
                });
            };
            match c {
                '"' => {
                    self.at += 1;
                    return Ok((start, Token::Str(value)));
                }
                '\\' => match rest[1..].chars().next() {
                    Some(e @ ('"' | '\\')) => {
                        value.push(e);
                        self.at += 2;
                    }
                    _ => {
                        return Err(FilterError::Syntax {
                            pos: self.at,
                            message: "only `\\\"` and `\\\\` are escapes in a string".to_owned(),
                        })
                    }
                },
                c => {
                    value.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }

    fn number(&mut self) -> Result<(usize, Token), FilterError> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut end = start;
        if bytes[end] == b'-' {
            end += 1;
        }
        let digits = |from: usize| {
            bytes[from..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count()
        };
        let int = digits(end);
        end += int;
        let mut frac = 0;
        if bytes.get(end) == Some(&b'.') {
            end += 1;
            frac = digits(end);
            end += frac;
        }
        if int + frac == 0 {
            return Err(FilterError::Syntax {
                pos: start,
                message: "a number needs at least one digit".to_owned(),
            });
        }
        if matches!(bytes.get(end), Some(b'e' | b'E')) {
            let mut exp_end = end + 1;
            if matches!(bytes.get(exp_end), Some(b'+' | b'-')) {
                exp_end += 1;
            }
            let exp = digits(exp_end);
            if exp == 0 {
                return Err(FilterError::Syntax {
                    pos: end,
                    message: "an exponent needs at least one digit".to_owned(),
                });
            }
            end = exp_end + exp;
        }
        self.at = end;
        match self.text[start..end].parse::<f64>() {
            Ok(n) if n.is_finite() => Ok((start, Token::Number(n))),
            _ => Err(FilterError::Syntax {
                pos: start,
                message: format!("number `{}` is out of range", &self.text[start..end]),
            }),
        }
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(usize, Token)>,
    limits: &'a FilterLimits,
    nodes: usize,
    /// Current nesting of parentheses and `!`.
    depth: usize,
}

impl Parser<'_> {
    fn next(&mut self) -> Result<(usize, Token), FilterError> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn peek(&mut self) -> Result<&(usize, Token), FilterError> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("just peeked"))
    }

    /// Counts one node of the tree, refusing the filter past `max_nodes`.
    fn node(&mut self, pos: usize) -> Result<(), FilterError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(FilterError::TooManyNodes {
                pos,
                max: self.limits.max_nodes,
            });
        }
        Ok(())
    }

    fn enter(&mut self, pos: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > self.limits.max_depth {
            return Err(FilterError::TooDeep {
                pos,
                max: self.limits.max_depth,
            });
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, FilterError> {
        self.list(Token::Or, Expr::Any, Self::all)
    }

    fn all(&mut self) -> Result<Expr, FilterError> {
        self.list(Token::And, Expr::All, Self::unary)
    }

    /// `item (sep item)*`, as one n-ary node when there are two or more items.
    fn list(
        &mut self,
        sep: Token,
        make: fn(Vec<Expr>) -> Expr,
        item: fn(&mut Self) -> Result<Expr, FilterError>,
    ) -> Result<Expr, FilterError> {
        let first = item(self)?;
        if self.peek()?.1 != sep {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.peek()?.1 == sep {
            let (pos, _) = self.next()?;
            self.node(pos)?;
            items.push(item(self)?);
        }
        Ok(make(items))
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        match self.peek()? {
            (pos, Token::Not) => {
                let pos = *pos;
                self.next()?;
                self.node(pos)?;
                self.enter(pos)?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            (pos, Token::LParen) => {
                let pos = *pos;
                self.next()?;
                self.enter(pos)?;
                let inner = self.expr()?;
                let (close, token) = self.next()?;
                if token != Token::RParen {
                    return Err(syntax(close, "`)`, `&&` or `||`", &token));
                }
                self.depth -= 1;
                Ok(inner)
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let lhs = self.operand()?;
        let (pos, token) = self.next()?;
        let Token::Cmp(op) = token else {
            return Err(syntax(
                pos,
                "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
                &token,
            ));
        };
        self.node(pos)?;
        let rhs = self.operand()?;
        if lhs.is_string() != rhs.is_string() {
            return Err(FilterError::Type {
                pos,
                message: "compares a string with a number".to_owned(),
            });
        }
        if lhs.is_string() && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
            return Err(FilterError::Type {
                pos,
                message: format!(
                    "strings compare only with `==` and `!=`, not `{}`",
                    op.symbol()
                ),
            });
        }
        Ok(Expr::Cmp(Cmp { lhs, op, rhs }))
    }

    fn operand(&mut self) -> Result<Operand, FilterError> {
        const EXPECTED: &str = "a value (a number, a string, coherence, criticality, \
                                eigenvalues[i], len(eigenvalues), producer or topic)";
        let (pos, token) = self.next()?;
        self.node(pos)?;
        let name = match token {
            Token::Number(n) => return Ok(Operand::Number(n)),
            Token::Str(s) => return Ok(Operand::Str(s)),
            Token::Ident(name) => name,
            other => return Err(syntax(pos, EXPECTED, &other)),
        };
        match name.as_str() {
            "coherence" => Ok(Operand::Coherence),
            "criticality" => Ok(Operand::Criticality),
            "producer" => Ok(Operand::Producer),
            "topic" => Ok(Operand::Topic),
            "eigenvalues" => {
                self.expect(Token::LBracket, "`[` (eigenvalues are read one at a time)")?;
                let index = self.index()?;
                self.expect(Token::RBracket, "`]`")?;
                Ok(Operand::Eigenvalue(index))
            }
            "len" => {
                self.expect(Token::LParen, "`(`")?;
                let (at, token) = self.next()?;
                if token != Token::Ident("eigenvalues".to_owned()) {
                    return Err(syntax(at, "`eigenvalues` (the only list)", &token));
                }
                self.expect(Token::RParen, "`)`")?;
                Ok(Operand::EigenvalueCount)
            }
            _ => Err(FilterError::Syntax {
                pos,
                message: format!(
                    "unknown field `{name}` (known: coherence, criticality, eigenvalues[i], \
                     len(eigenvalues), producer, topic)"
                ),
            }),
        }
    }

    fn index(&mut self) -> Result<u32, FilterError> {
        let (pos, token) = self.next()?;
        match token {
            Token::Number(n) if n >= 0.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => {
                Ok(n as u32)
            }
            Token::Number(_) => Err(FilterError::Syntax {
                pos,
                message: "an index is a whole number from 0 to 4294967295".to_owned(),
            }),
            other => Err(syntax(pos, "an index (a whole number)", &other)),
        }
    }

    fn expect(&mut self, want: Token, expected: &str) -> Result<(), FilterError> {
        let (pos, token) = self.next()?;
        if token != want {
            return Err(syntax(pos, expected, &token));
        }
        Ok(())
    }
}
