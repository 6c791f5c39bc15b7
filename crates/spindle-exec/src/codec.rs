//! The crate's serde format: postcard's layout (LEB128 varints, zigzag for
//! signed integers, `u8`/`i8`/`bool` as one byte, floats little-endian,
//! lengths as varints, enum variants as varint indices, structs and tuples
//! as their fields in order), with its own serializer and deserializer.
//!
//! Why not postcard itself: profiling a `map` of 100,000 tiny tasks showed
//! its per-integer path as the largest cost of the whole pool (more than
//! half the CPU after other fixes). postcard builds each varint in a stack
//! buffer and hands it to its output "flavor" as a slice (a copy per
//! integer, which stalls on store forwarding or becomes a `memcpy` call),
//! and its deserializer pops one byte at a time through the flavor. Here a
//! varint is written straight into the output and read straight from the
//! input slice. Both ends are always this crate, in the same executable, so
//! the format is private and can differ from postcard where convenient:
//! `char` is a varint `u32`, and a sequence of unknown length gets a
//! 10-byte (non-minimal, still valid) varint length patched in at its end.

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};
use std::fmt;

/// An encode or decode error (a message).
#[derive(Debug)]
pub(crate) struct CodecError(pub(crate) String);

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

impl ser::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

impl de::Error for CodecError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        CodecError(msg.to_string())
    }
}

type Res<T> = std::result::Result<T, CodecError>;

fn err<T>(msg: &str) -> Res<T> {
    Err(CodecError(msg.to_string()))
}

// ---------------------------------------------------------------------------
// Output.

/// Where the serializer writes: a growable `Vec` or a fixed slice.
pub(crate) trait Out {
    /// Make room for `n` more bytes; a pointer to them.
    fn room(&mut self, n: usize) -> Res<*mut u8>;
    /// Mark `n` bytes after the current end (made room for) as written.
    fn advance(&mut self, n: usize);
    /// Bytes written so far.
    fn pos(&self) -> usize;
    /// Overwrite already written bytes at `at`.
    fn patch(&mut self, at: usize, b: &[u8]);
}

impl Out for Vec<u8> {
    #[inline(always)]
    fn room(&mut self, n: usize) -> Res<*mut u8> {
        self.reserve(n);
        // SAFETY: `reserve` made capacity for `len + n` bytes.
        Ok(unsafe { self.as_mut_ptr().add(self.len()) })
    }
    #[inline(always)]
    fn advance(&mut self, n: usize) {
        debug_assert!(self.len() + n <= self.capacity());
        // SAFETY: callers wrote these `n` bytes, inside the capacity that
        // `room` reserved, before advancing.
        unsafe { self.set_len(self.len() + n) }
    }
    fn pos(&self) -> usize {
        self.len()
    }
    fn patch(&mut self, at: usize, b: &[u8]) {
        self[at..at + b.len()].copy_from_slice(b);
    }
}

/// A fixed output slice (a shared mapping); fails when full.
pub(crate) struct SliceOut<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
}

impl Out for SliceOut<'_> {
    #[inline(always)]
    fn room(&mut self, n: usize) -> Res<*mut u8> {
        if self.buf.len() - self.pos < n {
            return err("output buffer full");
        }
        // SAFETY: `pos + n <= buf.len()`, checked above.
        Ok(unsafe { self.buf.as_mut_ptr().add(self.pos) })
    }
    #[inline(always)]
    fn advance(&mut self, n: usize) {
        self.pos += n;
    }
    fn pos(&self) -> usize {
        self.pos
    }
    fn patch(&mut self, at: usize, b: &[u8]) {
        self.buf[at..at + b.len()].copy_from_slice(b);
    }
}

// ---------------------------------------------------------------------------
// Serializer.

pub(crate) struct Serializer<O: Out> {
    pub(crate) out: O,
}

impl<O: Out> Serializer<O> {
    #[inline(always)]
    fn varint(&mut self, mut v: u64) -> Res<()> {
        let n = (70 - (v | 1).leading_zeros() as usize) / 7;
        let p = self.out.room(n)?;
        let mut i = 0;
        // SAFETY: the varint of `v` is `n` bytes, for which `room` made space.
        unsafe {
            while v >= 0x80 {
                p.add(i).write(v as u8 | 0x80);
                v >>= 7;
                i += 1;
            }
            p.add(i).write(v as u8);
        }
        self.out.advance(i + 1);
        Ok(())
    }

    fn varint128(&mut self, mut v: u128) -> Res<()> {
        let n = (134 - (v | 1).leading_zeros() as usize) / 7;
        let p = self.out.room(n)?;
        let mut i = 0;
        // SAFETY: the varint of `v` is `n` bytes, for which `room` made space.
        unsafe {
            while v >= 0x80 {
                p.add(i).write(v as u8 | 0x80);
                v >>= 7;
                i += 1;
            }
            p.add(i).write(v as u8);
        }
        self.out.advance(i + 1);
        Ok(())
    }

    #[inline(always)]
    fn raw(&mut self, b: &[u8]) -> Res<()> {
        let p = self.out.room(b.len())?;
        // SAFETY: `room` made space for `b.len()` bytes at `p`, which is our
        // output and does not overlap `b`.
        unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), p, b.len()) };
        self.out.advance(b.len());
        Ok(())
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) -> Res<()> {
        let p = self.out.room(1)?;
        // SAFETY: `room` made space for one byte.
        unsafe { p.write(b) };
        self.out.advance(1);
        Ok(())
    }

    fn len(&mut self, len: Option<usize>) -> Res<Option<usize>> {
        match len {
            Some(n) => self.varint(n as u64).map(|_| None),
            None => {
                // Unknown length: a 10-byte varint placeholder, patched at the end.
                let at = self.out.pos();
                self.raw(&[0u8; 10])?;
                Ok(Some(at))
            }
        }
    }
}

/// Eight 7-bit groups, one per byte (little-endian, top bits clear), joined.
#[inline(always)]
fn gather7(x: u64) -> u64 {
    let x = (x & 0x007f_007f_007f_007f) | ((x & 0x7f00_7f00_7f00_7f00) >> 1);
    let x = (x & 0x0000_3fff_0000_3fff) | ((x & 0x3fff_0000_3fff_0000) >> 2);
    (x & 0x0000_0000_0fff_ffff) | ((x & 0x0fff_ffff_0000_0000) >> 4)
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn zigzag128(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn unzigzag128(v: u128) -> i128 {
    ((v >> 1) as i128) ^ -((v & 1) as i128)
}

/// A sequence, map, tuple or struct being serialized.
pub(crate) struct Compound<'a, O: Out> {
    ser: &'a mut Serializer<O>,
    /// Where an unknown length's placeholder is, and the count so far.
    patch: Option<usize>,
    count: u64,
}

impl<O: Out> Compound<'_, O> {
    fn finish(self) -> Res<()> {
        if let Some(at) = self.patch {
            let mut b = [0x80u8; 10];
            let mut v = self.count;
            for (i, x) in b.iter_mut().enumerate() {
                *x = (v as u8 & 0x7f) | if i < 9 { 0x80 } else { 0 };
                v >>= 7;
            }
            self.ser.out.patch(at, &b);
        }
        Ok(())
    }
}

impl<'a, O: Out> ser::Serializer for &'a mut Serializer<O> {
    type Ok = ();
    type Error = CodecError;
    type SerializeSeq = Compound<'a, O>;
    type SerializeTuple = Compound<'a, O>;
    type SerializeTupleStruct = Compound<'a, O>;
    type SerializeTupleVariant = Compound<'a, O>;
    type SerializeMap = Compound<'a, O>;
    type SerializeStruct = Compound<'a, O>;
    type SerializeStructVariant = Compound<'a, O>;

    fn is_human_readable(&self) -> bool {
        false
    }
    fn serialize_bool(self, v: bool) -> Res<()> {
        self.byte(v as u8)
    }
    fn serialize_i8(self, v: i8) -> Res<()> {
        self.byte(v as u8)
    }
    fn serialize_i16(self, v: i16) -> Res<()> {
        self.varint(zigzag(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Res<()> {
        self.varint(zigzag(v.into()))
    }
    #[inline(always)]
    fn serialize_i64(self, v: i64) -> Res<()> {
        self.varint(zigzag(v))
    }
    fn serialize_i128(self, v: i128) -> Res<()> {
        self.varint128(zigzag128(v))
    }
    fn serialize_u8(self, v: u8) -> Res<()> {
        self.byte(v)
    }
    fn serialize_u16(self, v: u16) -> Res<()> {
        self.varint(v.into())
    }
    fn serialize_u32(self, v: u32) -> Res<()> {
        self.varint(v.into())
    }
    #[inline(always)]
    fn serialize_u64(self, v: u64) -> Res<()> {
        self.varint(v)
    }
    fn serialize_u128(self, v: u128) -> Res<()> {
        self.varint128(v)
    }
    fn serialize_f32(self, v: f32) -> Res<()> {
        self.raw(&v.to_le_bytes())
    }
    fn serialize_f64(self, v: f64) -> Res<()> {
        self.raw(&v.to_le_bytes())
    }
    fn serialize_char(self, v: char) -> Res<()> {
        self.varint(u32::from(v).into())
    }
    fn serialize_str(self, v: &str) -> Res<()> {
        self.varint(v.len() as u64)?;
        self.raw(v.as_bytes())
    }
    fn serialize_bytes(self, v: &[u8]) -> Res<()> {
        self.varint(v.len() as u64)?;
        self.raw(v)
    }
    fn serialize_none(self) -> Res<()> {
        self.byte(0)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> Res<()> {
        self.byte(1)?;
        v.serialize(self)
    }
    fn serialize_unit(self) -> Res<()> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Res<()> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, idx: u32, _: &'static str) -> Res<()> {
        self.varint(idx.into())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, v: &T) -> Res<()> {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        v: &T,
    ) -> Res<()> {
        self.varint(idx.into())?;
        v.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Res<Compound<'a, O>> {
        let patch = self.len(len)?;
        Ok(Compound {
            ser: self,
            patch,
            count: 0,
        })
    }
    fn serialize_tuple(self, _: usize) -> Res<Compound<'a, O>> {
        Ok(Compound {
            ser: self,
            patch: None,
            count: 0,
        })
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Res<Compound<'a, O>> {
        self.serialize_tuple(0)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> Res<Compound<'a, O>> {
        self.varint(idx.into())?;
        self.serialize_tuple(0)
    }
    fn serialize_map(self, len: Option<usize>) -> Res<Compound<'a, O>> {
        self.serialize_seq(len)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Res<Compound<'a, O>> {
        self.serialize_tuple(0)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        idx: u32,
        _: &'static str,
        _: usize,
    ) -> Res<Compound<'a, O>> {
        self.varint(idx.into())?;
        self.serialize_tuple(0)
    }
}

impl<O: Out> ser::SerializeSeq for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    #[inline(always)]
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Res<()> {
        self.count += 1;
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        self.finish()
    }
}

impl<O: Out> ser::SerializeTuple for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    #[inline(always)]
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        Ok(())
    }
}

impl<O: Out> ser::SerializeTupleStruct for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        Ok(())
    }
}

impl<O: Out> ser::SerializeTupleVariant for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        Ok(())
    }
}

impl<O: Out> ser::SerializeMap for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> Res<()> {
        self.count += 1;
        k.serialize(&mut *self.ser)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        self.finish()
    }
}

impl<O: Out> ser::SerializeStruct for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    #[inline(always)]
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        Ok(())
    }
}

impl<O: Out> ser::SerializeStructVariant for Compound<'_, O> {
    type Ok = ();
    type Error = CodecError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, v: &T) -> Res<()> {
        v.serialize(&mut *self.ser)
    }
    fn end(self) -> Res<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Deserializer.

pub(crate) struct Deserializer<'de> {
    pub(crate) input: &'de [u8],
}

impl<'de> Deserializer<'de> {
    #[inline(always)]
    fn byte(&mut self) -> Res<u8> {
        match self.input.split_first() {
            Some((&b, rest)) => {
                self.input = rest;
                Ok(b)
            }
            None => err("unexpected end of input"),
        }
    }

    #[inline(always)]
    fn varint(&mut self) -> Res<u64> {
        // Branch-free for varints of up to 8 bytes when 8 bytes are left:
        // one load, the first byte without the continuation bit ends it.
        if let Some(w) = self.input.first_chunk::<8>() {
            let w = u64::from_le_bytes(*w);
            // One and two bytes (small numbers, lengths, indices) first.
            if w & 0x80 == 0 {
                self.input = &self.input[1..];
                return Ok(w & 0x7f);
            }
            if w & 0x8000 == 0 {
                self.input = &self.input[2..];
                return Ok((w & 0x7f) | ((w >> 1) & 0x3f80));
            }
            let stops = !w & 0x8080_8080_8080_8080;
            if stops != 0 {
                let last = stops & stops.wrapping_neg();
                let mask = (last - 1) | last;
                let n = (last.trailing_zeros() as usize + 1) / 8;
                self.input = &self.input[n..];
                return Ok(gather7(w & mask & 0x7f7f_7f7f_7f7f_7f7f));
            }
        }
        let mut v: u64 = 0;
        for (i, &b) in self.input.iter().enumerate().take(10) {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return err("varint overflows u64");
                }
                self.input = &self.input[i + 1..];
                return Ok(v);
            }
        }
        err("bad or truncated varint")
    }

    fn varint128(&mut self) -> Res<u128> {
        let mut v: u128 = 0;
        for (i, &b) in self.input.iter().enumerate().take(19) {
            v |= u128::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                if i == 18 && b > 3 {
                    return err("varint overflows u128");
                }
                self.input = &self.input[i + 1..];
                return Ok(v);
            }
        }
        err("bad or truncated varint")
    }

    fn take(&mut self, n: usize) -> Res<&'de [u8]> {
        if self.input.len() < n {
            return err("unexpected end of input");
        }
        let (a, b) = self.input.split_at(n);
        self.input = b;
        Ok(a)
    }

    fn len(&mut self) -> Res<usize> {
        let n = self.varint()?;
        usize::try_from(n).or_else(|_| err("length too large"))
    }

    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn narrow<T: TryFrom<u64>>(&mut self) -> Res<T> {
        let v = self.varint()?;
        T::try_from(v).or_else(|_| err("integer out of range"))
    }

    fn narrow_signed<T: TryFrom<i64>>(&mut self) -> Res<T> {
        let v = unzigzag(self.varint()?);
        T::try_from(v).or_else(|_| err("integer out of range"))
    }
}

/// `n` elements in a row (a sequence, tuple, struct or map).
struct Elems<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elems<'_, 'de> {
    type Error = CodecError;
    #[inline(always)]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Res<Option<T::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::MapAccess<'de> for Elems<'_, 'de> {
    type Error = CodecError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Res<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Res<V::Value> {
        seed.deserialize(&mut *self.de)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Deserializer<'de> {
    type Error = CodecError;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Res<(V::Value, Self)> {
        let idx: u32 = self.narrow()?;
        let v = seed.deserialize(IntoDeserializer::<CodecError>::into_deserializer(idx))?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Deserializer<'de> {
    type Error = CodecError;
    fn unit_variant(self) -> Res<()> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Res<T::Value> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Res<V::Value> {
        visitor.visit_seq(Elems {
            de: self,
            left: len,
        })
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        visitor.visit_seq(Elems {
            de: self,
            left: fields.len(),
        })
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = CodecError;

    fn is_human_readable(&self) -> bool {
        false
    }
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Res<V::Value> {
        err("the wire format is not self-describing (deserialize_any)")
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Res<V::Value> {
        err("the wire format is not self-describing (deserialize_ignored_any)")
    }
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.byte()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => err("bad bool"),
        }
    }
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_i8(self.byte()? as i8)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_i16(self.narrow_signed()?)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_i32(self.narrow_signed()?)
    }
    #[inline(always)]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_i64(unzigzag(self.varint()?))
    }
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_i128(unzigzag128(self.varint128()?))
    }
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u8(self.byte()?)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u16(self.narrow()?)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u32(self.narrow()?)
    }
    #[inline(always)]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u64(self.varint()?)
    }
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u128(self.varint128()?)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.array()?))
    }
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.array()?))
    }
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let c: u32 = self.narrow()?;
        match char::from_u32(c) {
            Some(c) => visitor.visit_char(c),
            None => err("bad char"),
        }
    }
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let n = self.len()?;
        let b = self.take(n)?;
        match std::str::from_utf8(b) {
            Ok(s) => visitor.visit_borrowed_str(s),
            Err(_) => err("bad UTF-8 in a string"),
        }
    }
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_str(visitor)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let n = self.len()?;
        visitor.visit_borrowed_bytes(self.take(n)?)
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        self.deserialize_bytes(visitor)
    }
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        match self.byte()? {
            0 => visitor.visit_none(),
            1 => visitor.visit_some(self),
            _ => err("bad option tag"),
        }
    }
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        visitor.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Res<V::Value> {
        visitor.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let left = self.len()?;
        visitor.visit_seq(Elems { de: self, left })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Res<V::Value> {
        visitor.visit_seq(Elems {
            de: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_tuple(len, visitor)
    }
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        let left = self.len()?;
        visitor.visit_map(Elems { de: self, left })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Res<V::Value> {
        visitor.visit_enum(self)
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Res<V::Value> {
        visitor.visit_u32(self.narrow()?)
    }
}

// ---------------------------------------------------------------------------
// Entry points.

/// Serialize `v` at the end of `out`.
pub(crate) fn to_vec<T: Serialize + ?Sized>(v: &T, out: Vec<u8>) -> Res<Vec<u8>> {
    let mut s = Serializer { out };
    v.serialize(&mut s)?;
    Ok(s.out)
}

/// Serialize `v` into `buf`; the number of bytes used.
pub(crate) fn to_slice<T: Serialize + ?Sized>(v: &T, buf: &mut [u8]) -> Res<usize> {
    let mut s = Serializer {
        out: SliceOut { buf, pos: 0 },
    };
    v.serialize(&mut s)?;
    Ok(s.out.pos)
}

/// Deserialize a `T` that must use all of `b`.
pub(crate) fn from_slice<'de, T: de::Deserialize<'de>>(b: &'de [u8]) -> Res<T> {
    let mut d = Deserializer { input: b };
    let v = T::deserialize(&mut d)?;
    if !d.input.is_empty() {
        return err("trailing bytes after the value");
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    enum E {
        Unit,
        New(i32),
        Tup(u8, String),
        Rec { a: Option<u64>, b: Vec<i16> },
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug, Clone)]
    struct S {
        b: bool,
        i: [i64; 5],
        u: (u8, u16, u32, u64, u128, i128),
        f: (f32, f64),
        c: char,
        s: String,
        o: Option<Box<S>>,
        e: Vec<E>,
        m: BTreeMap<String, i8>,
        unit: (),
        bytes: serde_bytes::ByteBuf,
    }

    fn sample() -> S {
        S {
            b: true,
            i: [0, -1, i64::MIN, i64::MAX, 300],
            u: (255, 65535, u32::MAX, u64::MAX, u128::MAX, i128::MIN),
            f: (1.5, -2.25e300),
            c: '\u{1F980}',
            s: "héllo".into(),
            o: Some(Box::new(S {
                b: false,
                i: [1; 5],
                u: (0, 0, 0, 0, 0, 0),
                f: (0.0, 0.0),
                c: 'a',
                s: String::new(),
                o: None,
                e: vec![],
                m: BTreeMap::new(),
                unit: (),
                bytes: serde_bytes::ByteBuf::new(),
            })),
            e: vec![
                E::Unit,
                E::New(-7),
                E::Tup(9, "x".into()),
                E::Rec {
                    a: Some(1 << 40),
                    b: vec![i16::MIN, 0, i16::MAX],
                },
            ],
            m: [("k".to_string(), -1i8), ("z".to_string(), 127)]
                .into_iter()
                .collect(),
            unit: (),
            bytes: serde_bytes::ByteBuf::from(vec![0u8, 1, 255]),
        }
    }

    #[test]
    fn round_trip() {
        let v = sample();
        let b = to_vec(&v, Vec::new()).unwrap();
        assert_eq!(from_slice::<S>(&b).unwrap(), v);
        let mut buf = vec![0u8; b.len()];
        assert_eq!(to_slice(&v, &mut buf).unwrap(), b.len());
        assert_eq!(buf, b);
        assert!(to_slice(&v, &mut buf[..b.len() - 1]).is_err());
        assert!(from_slice::<S>(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn varint_fast_paths() {
        // Every bit length, each value alone (slow paths: fewer than 8
        // bytes left) and followed by padding (fast paths).
        for bits in 0..=64u32 {
            for v in [
                if bits == 0 { 0 } else { 1u64 << (bits - 1) },
                if bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                },
            ] {
                let b = to_vec(&v, Vec::new()).unwrap();
                assert_eq!(from_slice::<u64>(&b).unwrap(), v, "{v:#x}");
                let padded = to_vec(&(v, [0u8; 9]), Vec::new()).unwrap();
                assert_eq!(&padded[..b.len()], &b[..]);
                assert_eq!(from_slice::<(u64, [u8; 9])>(&padded).unwrap().0, v);
                let mut buf = vec![0u8; b.len()];
                assert_eq!(to_slice(&v, &mut buf).unwrap(), b.len());
                assert_eq!(buf, b);
            }
        }
    }

    #[test]
    fn varint_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX - 1, u64::MAX] {
            let b = to_vec(&v, Vec::new()).unwrap();
            assert_eq!(b.len(), (64 - (v | 1).leading_zeros() as usize).div_ceil(7));
            assert_eq!(from_slice::<u64>(&b).unwrap(), v);
        }
        for v in [0u128, 127, 128, u128::MAX] {
            let b = to_vec(&v, Vec::new()).unwrap();
            assert_eq!(
                b.len(),
                (128 - (v | 1).leading_zeros() as usize).div_ceil(7)
            );
            assert_eq!(from_slice::<u128>(&b).unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let b = to_vec(&v, Vec::new()).unwrap();
            assert_eq!(from_slice::<i64>(&b).unwrap(), v);
        }
        // 11 bytes, or a 10th byte above 1: not a u64.
        assert!(from_slice::<u64>(&[0xff; 11]).is_err());
        let mut b = [0xffu8; 10];
        b[9] = 2;
        assert!(from_slice::<u64>(&b).is_err());
        // Out of range for a narrower type.
        let b = to_vec(&300u64, Vec::new()).unwrap();
        assert!(from_slice::<u8>(&b).is_err());
        assert!(from_slice::<u16>(&b).is_ok());
    }

    /// A sequence whose length serde does not know up front.
    struct Unsized(Vec<u32>);

    impl Serialize for Unsized {
        fn serialize<Se: ser::Serializer>(&self, s: Se) -> std::result::Result<Se::Ok, Se::Error> {
            s.collect_seq(self.0.iter().filter(|_| true))
        }
    }

    #[test]
    fn unknown_length() {
        let b = to_vec(&Unsized(vec![1, 2, 300]), Vec::new()).unwrap();
        assert_eq!(from_slice::<Vec<u32>>(&b).unwrap(), vec![1, 2, 300]);
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use std::time::Instant;

    /// `cargo test --release -p spindle-exec --lib codec_speed -- --ignored --nocapture`:
    /// ns per item to encode and to decode a chunk of 12,500 `u64` of the
    /// benchmark's sizes (best of 50 runs, robust against a loaded machine).
    #[test]
    #[ignore]
    fn codec_speed() {
        let args: Vec<u64> = (0..12_500u64).collect();
        let res: Vec<u64> = args.iter().map(|x| x * x).collect();
        for (name, v) in [("args", &args), ("results", &res)] {
            let mut enc = f64::MAX;
            let mut dec = f64::MAX;
            let mut b = Vec::new();
            for _ in 0..50 {
                let t = Instant::now();
                for _ in 0..20 {
                    b = std::hint::black_box(to_vec(v, Vec::with_capacity(b.len())).unwrap());
                }
                enc = enc.min(t.elapsed().as_secs_f64() / 20.0 / v.len() as f64 * 1e9);
                let t = Instant::now();
                for _ in 0..20 {
                    let d: Vec<u64> = from_slice(std::hint::black_box(&b)).unwrap();
                    std::hint::black_box(d);
                }
                dec = dec.min(t.elapsed().as_secs_f64() / 20.0 / v.len() as f64 * 1e9);
            }
            eprintln!(
                "{name}: {} bytes, encode {enc:.2} ns/item, decode {dec:.2} ns/item",
                b.len()
            );
        }
    }
}
