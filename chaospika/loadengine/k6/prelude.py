"""The fixed part of every generated k6 script: imports and the pika* helpers.

Captures and template warnings leave k6 as console lines starting with
`CAPTURE_PREFIX` / `WARNING_PREFIX` followed by JSON; the runner reads them back
from k6's console output file. The helpers mirror the pika engine's steps.py
and ws.py so both engines record the same checks, captures and metrics.
"""

__all__ = ["CAPTURE_PREFIX", "PRELUDE", "WARNING_PREFIX"]

CAPTURE_PREFIX = "PIKA_CAPTURE "
WARNING_PREFIX = "PIKA_WARNING "

PRELUDE = (
    """\
import http from 'k6/http';
import ws from 'k6/ws';
import { check, group, sleep } from 'k6';
import { Trend } from 'k6/metrics';

const wsMsgLatency = new Trend('ws_msg_latency', true);
const PIKA_MISSING = Symbol('missing');
const pikaVars = {};
const pikaWarned = {};
let pikaCount = 0;

class PikaTemplateError extends Error {}

// Unique in the run: each VU counts 1, 2, 3... interleaved by VU id.
function pikaCounter() {
  pikaCount += 1;
  return (pikaCount - 1) * PIKA_COUNTER_STRIDE + __VU;
}

function pikaChoice(items) {
  return items[Math.floor(Math.random() * items.length)];
}

function pikaRandint(low, high) {
  return low + Math.floor(Math.random() * (high - low + 1));
}

function pikaUniform(low, high) {
  return low + Math.random() * (high - low);
}

// Text of a value as the pika engine (Python's str) writes it.
function pikaText(value) {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return 'None';
  if (typeof value === 'boolean') return value ? 'True' : 'False';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

function pikaVar(scenario, name, field) {
  const vars = pikaVars[scenario];
  if (vars === undefined || !Object.prototype.hasOwnProperty.call(vars, name)) {
    throw new PikaTemplateError(
      `${field}: {{var.${name}}} has no value yet (nothing captured it in this VU)`);
  }
  return vars[name];
}

function pikaCapture(scenario, name, value) {
  if (pikaVars[scenario] === undefined) pikaVars[scenario] = {};
  pikaVars[scenario][name] = value;
  console.log('"""
    + CAPTURE_PREFIX
    + """' + JSON.stringify([scenario, name, value]));
}

// One iteration; a template without a value ends it, as in the pika engine.
function pikaIteration(body) {
  try {
    body();
  } catch (error) {
    if (!(error instanceof PikaTemplateError)) throw error;
    if (!pikaWarned[error.message]) {
      pikaWarned[error.message] = true;
      console.warn('"""
    + WARNING_PREFIX
    + """' + JSON.stringify(error.message));
    }
  }
}

function pikaJson(response) {
  if (response.status === 0) return PIKA_MISSING;
  try {
    return response.json();
  } catch (error) {
    return PIKA_MISSING;
  }
}

function pikaLookup(document, keys) {
  for (const key of keys) {
    if (typeof key === 'number' && Array.isArray(document)) {
      if (key < -document.length || key >= document.length) return PIKA_MISSING;
      document = document[key < 0 ? document.length + key : key];
    } else if (document !== null && typeof document === 'object'
               && !Array.isArray(document)
               && Object.prototype.hasOwnProperty.call(document, String(key))) {
      document = document[String(key)];
    } else {
      return PIKA_MISSING;
    }
  }
  return document;
}

// Python's == on JSON values (true == 1, 1 == 1.0).
function pikaEquals(left, right) {
  const scalar = (v) => typeof v === 'number' || typeof v === 'boolean';
  if (scalar(left) && scalar(right)) return Number(left) === Number(right);
  if (left === null || right === null) return left === right;
  if (Array.isArray(left) || Array.isArray(right)) {
    if (!Array.isArray(left) || !Array.isArray(right)) return false;
    if (left.length !== right.length) return false;
    return left.every((item, index) => pikaEquals(item, right[index]));
  }
  if (typeof left === 'object' && typeof right === 'object') {
    const keys = Object.keys(left);
    if (keys.length !== Object.keys(right).length) return false;
    return keys.every((key) => Object.prototype.hasOwnProperty.call(right, key)
                                && pikaEquals(left[key], right[key]));
  }
  return left === right;
}

function pikaHeader(response, lowerName) {
  for (const name of Object.keys(response.headers)) {
    if (name.toLowerCase() === lowerName) return response.headers[name];
  }
  return PIKA_MISSING;
}

function pikaCheck(name, ok) {
  check(null, { [name]: () => ok });
}

function pikaLatency(message, field) {
  let sentAt;
  try {
    sentAt = JSON.parse(message)[field];
  } catch (error) {
    return null;
  }
  return typeof sentAt === 'number' ? Date.now() - sentAt : null;
}

// One `ws` step, timed like the pika engine's ws_plan.run_ws_plan (times in ms).
function pikaWs(plan) {
  const start = Date.now();
  const progress = { sent: 0, received: 0 };
  for (let attempt = 0; attempt <= plan.reconnects; attempt++) {
    if (attempt) sleep(Math.min(1, 0.1 * attempt));
    let opened = false;
    let lost = false;
    ws.connect(plan.url(), { headers: plan.headers(), tags: { name: plan.name } },
      (socket) => {
        let closing = false;
        let awaitingExpected = false;
        let began = 0;
        let sentHere = 0;
        const close = () => {
          closing = true;
          socket.close();
        };
        const afterHold = () => {
          if (closing) return;
          const left = start + plan.expectTimeout - Date.now();
          if (progress.received >= plan.expectCount || left <= 0) return close();
          awaitingExpected = true;
          socket.setTimeout(close, left);
        };
        const afterSending = () => {
          const left = start + plan.hold - Date.now();
          if (left > 0) socket.setTimeout(afterHold, left);
          else afterHold();
        };
        const sendNext = () => {
          if (closing) return;
          if (progress.sent >= plan.count) return afterSending();
          socket.send(plan.message());
          progress.sent += 1;
          sentHere += 1;
          if (progress.sent >= plan.count) return afterSending();
          socket.setTimeout(sendNext, Math.max(0, began + sentHere * plan.every - Date.now()));
        };
        socket.on('open', () => {
          opened = true;
          pikaCheck(`${plan.name}: connected`, true);
          if (plan.join !== null) socket.send(plan.join());
          began = Date.now();
          sendNext();
        });
        socket.on('message', (message) => {
          progress.received += 1;
          if (plan.latencyField !== null) {
            const latency = pikaLatency(message, plan.latencyField);
            if (latency !== null) wsMsgLatency.add(latency, { url: plan.name });
          }
          if (awaitingExpected && progress.received >= plan.expectCount) close();
        });
        socket.on('close', () => {
          if (!closing) lost = true;
        });
      });
    if (!opened) {
      pikaCheck(`${plan.name}: connected`, false);
      continue;
    }
    if (!lost) break;
  }
  if (plan.expectCount) {
    pikaCheck(`${plan.name}: received ${plan.expectCount} messages`,
              progress.received >= plan.expectCount);
  }
}
"""
)
