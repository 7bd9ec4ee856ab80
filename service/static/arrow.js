// A small reader of the Arrow IPC stream format (https://arrow.apache.org/docs/format/Columnar.html), enough for
// the explorer's map: a schema and its record batches, no compression, no dictionaries, columns of
// int8-64/uint8-64, float32/64, utf8, binary and fixed-size binary. Its metadata is read as JSON where it
// parses. No dependency: the flatbuffers of the messages are read directly (tables, vtables, vectors).
"use strict";

(function (global) {
  const TYPE = { 2: "int", 3: "float", 4: "binary", 5: "utf8", 15: "fixed" };  // Type union tags (Schema.fbs)
  const HEADER = { SCHEMA: 1, DICTIONARY: 2, RECORD_BATCH: 3 };  // MessageHeader union tags (Message.fbs)

  // One flatbuffer table at `pos` of the DataView `dv`.
  function table(dv, pos) {
    const vt = pos - dv.getInt32(pos, true), vtSize = dv.getUint16(vt, true);
    const at = (i) => { const o = 4 + 2 * i; return o < vtSize ? dv.getUint16(vt + o, true) : 0; };
    const ref = (i) => { const o = at(i); return o ? pos + o + dv.getUint32(pos + o, true) : 0; };
    return {
      u8: (i, d = 0) => (at(i) ? dv.getUint8(pos + at(i)) : d),
      i16: (i, d = 0) => (at(i) ? dv.getInt16(pos + at(i), true) : d),
      i32: (i, d = 0) => (at(i) ? dv.getInt32(pos + at(i), true) : d),
      i64: (i, d = 0) => (at(i) ? int64(dv, pos + at(i)) : d),
      table: (i) => (ref(i) ? table(dv, ref(i)) : null),
      string: (i) => (ref(i) ? text(dv, ref(i)) : null),
      tables: (i) => { const v = ref(i); if (!v) return []; const n = dv.getUint32(v, true), out = [];
        for (let k = 0; k < n; k++) { const e = v + 4 + 4 * k; out.push(table(dv, e + dv.getUint32(e, true))); } return out; },
      structs: (i, size) => { const v = ref(i); if (!v) return []; const n = dv.getUint32(v, true), out = [];
        for (let k = 0; k < n; k++) out.push(v + 4 + size * k); return out; },
    };
  }

  function int64(dv, at) {  // lengths and offsets: below 2^53
    return dv.getUint32(at, true) + dv.getInt32(at + 4, true) * 4294967296;
  }

  const utf8 = new TextDecoder("utf-8");
  function text(dv, at) {
    const n = dv.getUint32(at, true);
    return utf8.decode(new Uint8Array(dv.buffer, dv.byteOffset + at + 4, n));
  }

  function field(t) {
    const tag = t.u8(2), type = t.table(3), kind = TYPE[tag];
    if (!kind) throw new Error(`Arrow: column ${t.string(0)} has a type this reader does not read (${tag})`);
    const f = { name: t.string(0), kind };
    if (kind === "int") Object.assign(f, { bits: type.i32(0), signed: !!type.u8(1) });
    if (kind === "float") f.bits = [16, 32, 64][type.i16(0)];
    if (kind === "fixed") f.width = type.i32(0);
    if (t.table(4)) throw new Error(`Arrow: column ${f.name} is dictionary-encoded`);
    return f;
  }

  function metadata(t, i) {
    const out = {};
    for (const kv of t.tables(i)) {
      const k = kv.string(0), v = kv.string(1);
      try { out[k] = JSON.parse(v); } catch { out[k] = v; }
    }
    return out;
  }

  const ARRAYS = { "int8": Int8Array, "int16": Int16Array, "int32": Int32Array, "uint8": Uint8Array, "uint16": Uint16Array,
    "uint32": Uint32Array, "int64": BigInt64Array, "uint64": BigUint64Array, "float32": Float32Array, "float64": Float64Array };

  // A column of one batch: a typed array (numbers), an array of strings, or of Uint8Arrays (binary).
  function column(f, bytes, node, bufs, take) {
    const n = node.length, validity = take(), nulls = node.nulls;
    const isNull = nulls && validity.length ? (i) => !((validity[i >> 3] >> (i & 7)) & 1) : () => false;
    if (f.kind === "int" || f.kind === "float") {
      const Type = ARRAYS[(f.kind === "float" ? "float" : f.signed ? "int" : "uint") + f.bits];
      if (!Type) throw new Error(`Arrow: column ${f.name} is of a width this reader does not read`);
      const b = take(), values = new Type(n);
      values.set(new Type(b.buffer.slice(b.byteOffset, b.byteOffset + n * Type.BYTES_PER_ELEMENT)));
      if (nulls) for (let i = 0; i < n; i++) if (isNull(i)) values[i] = f.kind === "float" ? NaN : f.bits === 64 ? 0n : 0;
      return values;
    }
    if (f.kind === "fixed") {
      const b = take(), out = new Array(n);
      for (let i = 0; i < n; i++) out[i] = isNull(i) ? null : b.subarray(i * f.width, (i + 1) * f.width);
      return out;
    }
    const ob = take(), data = take(), out = new Array(n);
    const offsets = new Int32Array(ob.buffer.slice(ob.byteOffset, ob.byteOffset + 4 * (n + 1)));
    for (let i = 0; i < n; i++) {
      const part = data.subarray(offsets[i], offsets[i + 1]);
      out[i] = isNull(i) ? null : f.kind === "utf8" ? utf8.decode(part) : part;
    }
    return out;
  }

  function concat(parts, f) {
    if (parts.length === 1) return parts[0];
    if (f && (f.kind === "int" || f.kind === "float")) {
      const n = parts.reduce((a, p) => a + p.length, 0), out = new parts[0].constructor(n);
      let at = 0;
      for (const p of parts) { out.set(p, at); at += p.length; }
      return out;
    }
    return [].concat(...parts.map((p) => Array.from(p)));
  }

  // An Arrow IPC stream (an ArrayBuffer) → {fields, metadata, length, columns: {name: values}}.
  function readArrowStream(buffer) {
    const dv = new DataView(buffer), u8 = new Uint8Array(buffer);
    let pos = 0, schema = null, length = 0;
    const parts = {};
    while (pos + 4 <= buffer.byteLength) {
      let size = dv.getInt32(pos, true);
      pos += 4;
      if (size === -1) { size = dv.getInt32(pos, true); pos += 4; }  // continuation marker, then the size
      if (size === 0) break;  // end of stream
      const message = table(dv, pos + dv.getUint32(pos, true));
      pos += size;
      const kind = message.u8(1), header = message.table(2), bodyLength = message.i64(3);
      const body = u8.subarray(pos, pos + bodyLength);
      pos += bodyLength;
      if (kind === HEADER.SCHEMA) {
        schema = { fields: header.tables(1).map(field), metadata: metadata(header, 2) };
        for (const f of schema.fields) parts[f.name] = [];
      } else if (kind === HEADER.RECORD_BATCH) {
        if (!schema) throw new Error("Arrow: a record batch before the schema");
        if (header.table(3)) throw new Error("Arrow: compressed buffers are not read");
        const nodes = header.structs(1, 16).map((at) => ({ length: int64(dv, at), nulls: int64(dv, at + 8) }));
        const bufs = header.structs(2, 16).map((at) => body.subarray(int64(dv, at), int64(dv, at) + int64(dv, at + 8)));
        let b = 0;
        const take = () => bufs[b++];
        schema.fields.forEach((f, k) => parts[f.name].push(column(f, body, nodes[k], bufs, take)));
        length += header.i64(0);
      } else if (kind === HEADER.DICTIONARY) {
        throw new Error("Arrow: dictionary batches are not read");
      }
    }
    if (!schema) throw new Error("Arrow: no schema in the stream");
    const columns = {};
    for (const f of schema.fields) {
      const p = parts[f.name];
      columns[f.name] = p.length ? concat(p, f) : [];
    }
    return { fields: schema.fields, metadata: schema.metadata, length, columns };
  }

  function hex(bytes) {  // a fixed-size binary value (sha256: 32 bytes) as lowercase hex digits
    let s = "";
    for (let i = 0; i < bytes.length; i++) s += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16);
    return s;
  }

  global.ArrowStream = { readArrowStream, hex };
  if (typeof module !== "undefined") module.exports = global.ArrowStream;
})(typeof window !== "undefined" ? window : globalThis);
