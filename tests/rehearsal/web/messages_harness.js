// The browser half of tests/rehearsal/web/test_messages.py: messages.js on bytes and values from Python.
// Values cross the page boundary as JSON text with markers: {$bytes: base64}, {$int: "digits"} (BigInt),
// {$neg0: true} (-0.0), {$float: "text"} (a number beyond 2^53, which JSON would turn into an int).

import * as messages from "/static/js/messages.js";
import { b64, unb64 } from "/tests/decoder_harness.js";

export function toWire(value) {
  if (value instanceof Uint8Array) return { $bytes: b64(value) };
  if (typeof value === "bigint") return { $int: value.toString() };
  if (typeof value === "number" && Object.is(value, -0)) return { $neg0: true };
  if (typeof value === "number" && Math.abs(value) > Number.MAX_SAFE_INTEGER) return { $float: String(value) };
  if (Array.isArray(value)) return value.map(toWire);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value)) define(out, key, toWire(value[key]));
    return out;
  }
  return value;
}

function define(obj, key, value) {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

export function fromWire(value) {
  if (Array.isArray(value)) return value.map(fromWire);
  if (value !== null && typeof value === "object") {
    if ("$bytes" in value) return unb64(value.$bytes);
    if ("$int" in value) {
      const n = BigInt(value.$int);
      return n >= BigInt(Number.MIN_SAFE_INTEGER) && n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
    }
    if ("$neg0" in value) return -0;
    if ("$float" in value) return Number(value.$float);
    const out = {};
    for (const key of Object.keys(value)) define(out, key, fromWire(value[key]));
    return out;
  }
  return value;
}

export function schema(name) {
  return messages[name].types().map((t) => ({
    name: t.name,
    fields: t.fields.map((f) => ({ name: f.name, kind: f.kind, required: f.required, max_length: f.maxLength, items: f.items })),
  }));
}

/** Decode each base64 message: {ok, type, fields, reencoded} or {ok: false, error, name}. */
export function decodeAll(texts, registryName = "REHEARSAL_REGISTRY") {
  const registry = messages[registryName];
  const results = texts.map((text) => {
    try {
      const { type, fields } = messages.decodeMessage(unb64(text), registry);
      return { ok: true, type, fields: toWire(fields), reencoded: b64(messages.encodeMessage(type, fields, registry)) };
    } catch (exc) {
      return { ok: false, error: String(exc.message), name: exc.name, isMessageError: exc instanceof messages.MessageError };
    }
  });
  return JSON.stringify(results); // JSON text: an own "__proto__" key survives, as in Python's dict
}

/** Encode each {type, fields}: {ok, bytes} or {ok: false, error, name}. */
export function encodeAll(items, registryName = "REHEARSAL_REGISTRY") {
  const registry = messages[registryName];
  return items.map(({ type, fields }) => {
    try {
      return { ok: true, bytes: b64(messages.encodeMessage(type, fromWire(fields), registry)) };
    } catch (exc) {
      return { ok: false, error: String(exc.message), name: exc.name, isMessageError: exc instanceof messages.MessageError };
    }
  });
}

/** The same messages through MessageRegistry.fromSchema(schema) (what a server-sent schema gives). */
export function decodeWithSchema(schemaList, texts) {
  const registry = messages.MessageRegistry.fromSchema(schemaList);
  return texts.map((text) => {
    const { type, fields } = registry.decode(unb64(text));
    return { type, reencoded: b64(registry.encode(type, fields)) };
  });
}
