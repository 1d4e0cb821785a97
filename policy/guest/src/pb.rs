//! Just enough protobuf to read a message without allocating: an iterator over its fields.

use crate::DecodeError;

/// The value of one field, by wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0: int32/64, uint32/64, sint (zigzag, undecoded), bool, enum.
    Varint(u64),
    /// Wire type 1: fixed64, sfixed64, double (`f64::from_bits`).
    Fixed64(u64),
    /// Wire type 2: string, bytes, embedded message, packed repeated.
    Bytes(&'a [u8]),
    /// Wire type 5: fixed32, sfixed32, float (`f32::from_bits`).
    Fixed32(u32),
}

/// One field: its number and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
}

/// Iterates over the fields of an encoded message, in wire order. Stops after the first error.
#[derive(Debug, Clone)]
pub struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            rest: bytes,
            failed: false,
        }
    }

    fn field(&mut self) -> Result<Field<'a>, DecodeError> {
        let key = varint(&mut self.rest)?;
        let number = u32::try_from(key >> 3).map_err(|_| DecodeError::Malformed)?;
        if number == 0 {
            return Err(DecodeError::Malformed);
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(&mut self.rest)?),
            1 => Value::Fixed64(u64::from_le_bytes(take::<8>(&mut self.rest)?)),
            2 => {
                let len =
                    usize::try_from(varint(&mut self.rest)?).map_err(|_| DecodeError::Malformed)?;
                if len > self.rest.len() {
                    return Err(DecodeError::Malformed);
                }
                let (bytes, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Bytes(bytes)
            }
            5 => Value::Fixed32(u32::from_le_bytes(take::<4>(&mut self.rest)?)),
            // Groups (3, 4) are long deprecated; anything else is not protobuf.
            _ => return Err(DecodeError::Malformed),
        };
        Ok(Field { number, value })
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        self.failed = field.is_err();
        Some(field)
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&byte, rest) = buf.split_first().ok_or(DecodeError::Malformed)?;
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::Malformed)
}

fn take<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], DecodeError> {
    if buf.len() < N {
        return Err(DecodeError::Malformed);
    }
    let (head, rest) = buf.split_at(N);
    *buf = rest;
    let mut out = [0u8; N];
    out.copy_from_slice(head);
    Ok(out)
}

/// Finds the last value of field `number` in a message (protobuf's rule for a repeated scalar
/// field read as a singular one). Errors if the message is malformed anywhere.
pub fn last_field<'a>(bytes: &'a [u8], number: u32) -> Result<Option<Value<'a>>, DecodeError> {
    let mut found = None;
    for field in Fields::new(bytes) {
        let field = field?;
        if field.number == number {
            found = Some(field.value);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_wire_type() {
        // field 1 varint 300, field 2 bytes "hi", field 3 double 1.5, field 4 fixed32 7
        let mut msg = [0u8; 32];
        let mut n = 0;
        for b in [0x08, 0xac, 0x02, 0x12, 2, b'h', b'i', 0x19] {
            msg[n] = b;
            n += 1;
        }
        msg[n..n + 8].copy_from_slice(&1.5f64.to_bits().to_le_bytes());
        n += 8;
        msg[n] = 0x25;
        n += 1;
        msg[n..n + 4].copy_from_slice(&7u32.to_le_bytes());
        n += 4;
        let mut it = Fields::new(&msg[..n]);
        assert_eq!(it.next().unwrap().unwrap().value, Value::Varint(300));
        assert_eq!(it.next().unwrap().unwrap().value, Value::Bytes(b"hi"));
        assert_eq!(
            it.next().unwrap().unwrap().value,
            Value::Fixed64(1.5f64.to_bits())
        );
        assert_eq!(it.next().unwrap().unwrap().value, Value::Fixed32(7));
        assert!(it.next().is_none());
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(Fields::new(&[0x12, 5, b'a']).next().unwrap().is_err());
        assert!(Fields::new(&[0x08]).next().unwrap().is_err());
        assert!(Fields::new(&[0x19, 1, 2]).next().unwrap().is_err());
        assert!(Fields::new(&[0x0b]).next().unwrap().is_err());
        assert!(last_field(&[0x08, 1, 0x12], 1).is_err());
    }
}
