//! A borrowing reader of the protobuf wire format, for walking messages without decoding them.
//!
//! Every position it reports is absolute in the outermost buffer, so a caller can copy a field
//! (tag, length and body) verbatim into another message.

use std::ops::Range;

pub(crate) const WIRE_VARINT: u8 = 0;
pub(crate) const WIRE_I64: u8 = 1;
pub(crate) const WIRE_LEN: u8 = 2;
pub(crate) const WIRE_I32: u8 = 5;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    /// 32-bit values are skipped; nothing read so far needs them.
    I64(u64),
    Len(&'a [u8]),
    I32,
}

impl Value<'_> {
    pub(crate) fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => WIRE_VARINT,
            Value::I64(_) => WIRE_I64,
            Value::Len(_) => WIRE_LEN,
            Value::I32 => WIRE_I32,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Field<'a> {
    pub number: u32,
    pub value: Value<'a>,
    /// The whole field, tag included, in the outermost buffer.
    pub raw: Range<usize>,
    /// Where a length-delimited body starts in the outermost buffer.
    pub body_start: usize,
}

/// Iterates the fields of one message body. `base` is the body's offset in the outermost buffer.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err("truncated varint");
            };
            self.pos += 1;
            if i == 9 && byte > 1 {
                return Err("varint overflows 64 bits");
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes")
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(len).ok_or("length overflows")?;
        let bytes = self.buf.get(self.pos..end).ok_or("field runs past the end of its message")?;
        self.pos = end;
        Ok(bytes)
    }

    fn read_field(&mut self) -> Result<Field<'a>, &'static str> {
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if number == 0 || number > 536_870_911 {
            return Err("field number out of range");
        }
        let mut body_start = 0;
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_I64 => Value::I64(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"))),
            WIRE_LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                body_start = self.base + self.pos;
                Value::Len(self.take(len)?)
            }
            WIRE_I32 => {
                self.take(4)?;
                Value::I32
            }
            3 | 4 => return Err("groups are not supported"),
            _ => return Err("invalid wire type"),
        };
        Ok(Field { number, value, raw: self.base + start..self.base + self.pos, body_start })
    }
}

impl<'a> Iterator for Reader<'a> {
    type Item = Result<Field<'a>, &'static str>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let item = self.read_field();
        if item.is_err() {
            // Nothing after a framing error can be trusted.
            self.pos = self.buf.len();
        }
        Some(item)
    }
}

pub(crate) fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn varint_len(value: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    ((64 - (value | 1).leading_zeros() as usize) + 6) / 7
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_length() {
        for v in [0u64, 1, 127, 128, 300, 16_383, 16_384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            encode_varint(v, &mut buf);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            let mut reader = Reader::new(&buf, 0);
            assert_eq!(reader.varint().unwrap(), v);
        }
    }

    #[test]
    fn framing_errors_end_iteration() {
        // Field 1, length 5, only 2 bytes present.
        let buf = [0x0a, 0x05, 1, 2];
        let mut reader = Reader::new(&buf, 0);
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none());
        let groups = [0x0b];
        assert!(Reader::new(&groups, 0).next().unwrap().is_err());
    }
}
