// The official JavaScript SDKs against the gateway, as an app would call it: only the base
// URL changes. TestJSClients starts a gateway, runs this script with BASE (no /v1) and KEY,
// and then reconciles what it printed with the ledger. Output: one JSON line with every
// check's outcome and every HTTP response the SDKs received (request id, status, cost header,
// usage.cost of a non-stream body). Exit status 1 when a check failed.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';

const BASE = process.env.BASE;
const KEY = process.env.KEY;
const calls = [];
// Every response the SDKs get, recorded from a fetch wrapper: the SDK sees it unchanged.
const recording = async (url, init) => {
  const r = await fetch(url, init);
  const rec = { path: new URL(String(url)).pathname, status: r.status, request_id: r.headers.get('x-btl-request-id'), cost: r.headers.get('x-btl-cost-usd') };
  calls.push(rec);
  if ((r.headers.get('content-type') || '').startsWith('application/json')) {
    try { rec.usage_cost = (await r.clone().json())?.usage?.cost ?? null; } catch { /* not JSON after all */ }
  }
  return r;
};
const oa = new OpenAI({ baseURL: BASE + '/v1', apiKey: KEY, maxRetries: 0, fetch: recording });
const an = new Anthropic({ baseURL: BASE, apiKey: KEY, maxRetries: 0, fetch: recording });

const checks = [];
async function check(name, fn) {
  try {
    await fn();
    checks.push({ name, ok: true });
  } catch (e) {
    checks.push({ name, ok: false, error: `${e?.constructor?.name}: ${String(e?.message).slice(0, 300)}` });
  }
}
function assert(cond, msg) { if (!cond) throw new Error(msg); }
async function expectError(fn, cls, status) {
  try { await fn(); } catch (e) {
    assert(e instanceof cls, `want ${cls.name}, got ${e?.constructor?.name}: ${e?.message}`);
    assert(e.status === status, `want status ${status}, got ${e.status}`);
    return e;
  }
  throw new Error('no error');
}

const user = (content) => [{ role: 'user', content }];
const weather = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };

await check('chat', async () => {
  const r = await oa.chat.completions.create({ model: 'btl-fast', messages: user('Hello!') });
  assert(r.choices[0].message.content, 'no content');
  assert(typeof r.usage.cost === 'number', 'no usage.cost');
});
await check('chat stream with usage', async () => {
  const s = await oa.chat.completions.create({ model: 'btl-fast', stream: true, stream_options: { include_usage: true }, messages: user('Tell me a story') });
  let text = '', usage;
  for await (const c of s) { text += c.choices[0]?.delta?.content ?? ''; usage = c.usage ?? usage; }
  assert(text && usage?.completion_tokens > 0 && typeof usage.cost === 'number', `text ${text.length}, usage ${JSON.stringify(usage)}`);
});
await check('chat stream without usage', async () => {
  const s = await oa.chat.completions.create({ model: 'btl-fast', stream: true, messages: user('Tell me a story') });
  for await (const c of s) assert(!c.usage, 'usage chunk sent to a client that did not ask');
});
for (const model of ['btl-fast', 'btl-balanced']) {
  await check(`chat tools ${model}`, async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather } }];
    const r = await oa.chat.completions.create({ model, tools, tool_choice: 'required', messages: user('Weather in Paris?') });
    const call = r.choices[0].message.tool_calls?.[0];
    assert(call && JSON.parse(call.function.arguments).city !== undefined, JSON.stringify(r.choices[0]));
    const r2 = await oa.chat.completions.create({ model, tools, messages: [...user('Weather in Paris?'), r.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '20C' }] });
    assert(r2.choices[0].message.content, 'no answer after the tool result');
  });
  await check(`chat tools stream ${model}`, async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: weather } }];
    const fin = await oa.chat.completions.stream({ model, tools, tool_choice: 'required', messages: user('Weather in Paris?') }).finalChatCompletion();
    const call = fin.choices[0].message.tool_calls?.[0];
    assert(call && JSON.parse(call.function.arguments), JSON.stringify(fin.choices[0]));
  });
  await check(`chat parse ${model}`, async () => {
    const Event = z.object({ name: z.string(), participants: z.array(z.string()) });
    const r = await oa.chat.completions.parse({ model, messages: user('Alice and Bob go to a fair'), response_format: zodResponseFormat(Event, 'event') });
    assert(r.choices[0].message.parsed, JSON.stringify(r.choices[0].message));
  });
}
await check('responses with previous_response_id across providers', async () => {
  const r1 = await oa.responses.create({ model: 'btl-fast', input: 'Say hi' });
  const r2 = await oa.responses.create({ model: 'btl-balanced', input: 'And again', previous_response_id: r1.id });
  assert(r1.output_text && r2.output_text, 'no output_text');
  const items = await oa.responses.inputItems.list(r2.id);
  assert(items.data.length === 3, `input items ${items.data.length}`);
  assert((await oa.responses.retrieve(r2.id)).status === 'completed', 'retrieve');
});
await check('responses stream', async () => {
  const fin = await oa.responses.stream({ model: 'btl-balanced', input: 'Stream please' }).finalResponse();
  assert(fin.status === 'completed' && fin.usage.output_tokens > 0, JSON.stringify(fin.usage));
});
await check('responses function call round trip', async () => {
  const r = await oa.responses.create({ model: 'btl-balanced', input: 'Weather in Paris?', tool_choice: 'required', tools: [{ type: 'function', name: 'get_weather', parameters: weather, strict: false }] });
  const fc = r.output.find((o) => o.type === 'function_call');
  assert(fc, JSON.stringify(r.output));
  const r2 = await oa.responses.create({ model: 'btl-balanced', previous_response_id: r.id, input: [{ type: 'function_call_output', call_id: fc.call_id, output: '20C' }] });
  assert(r2.output_text, 'no answer after the function output');
});
await check('responses delete', async () => {
  const r = await oa.responses.create({ model: 'btl-fast', input: 'Say hi' });
  await oa.responses.delete(r.id);
  await expectError(() => oa.responses.retrieve(r.id), OpenAI.NotFoundError, 404);
});
await check('embeddings (base64 by default in the SDK)', async () => {
  const r = await oa.embeddings.create({ model: 'btl-embed', input: ['a', 'b b'], dimensions: 256 });
  assert(r.data.length === 2 && r.data[1].embedding.length === 256 && r.data[1].index === 1, JSON.stringify(r.usage));
});
await check('models', async () => {
  const ids = [];
  for await (const m of oa.models.list()) ids.push(m.id);
  for (const slug of ['btl-fast', 'btl-balanced', 'btl-embed']) assert(ids.includes(slug), `models.list lacks ${slug}`);
  assert((await oa.models.retrieve('btl-fast')).id === 'btl-fast', 'retrieve');
  const e = await expectError(() => oa.models.retrieve('no-such-model'), OpenAI.NotFoundError, 404);
  assert(e.code === 'model_not_found', `code ${e.code}`);
});
await check('legacy completions', async () => {
  const r = await oa.completions.create({ model: 'btl-fast', prompt: 'Once upon', max_tokens: 20 });
  assert(r.choices[0].text && typeof r.usage.cost === 'number', JSON.stringify(r));
});
await check('moderations', async () => {
  const r = await oa.moderations.create({ input: 'I love kittens' });
  assert(r.results.length === 1, JSON.stringify(r));
});
await check('OpenAI error classes', async () => {
  const bad = new OpenAI({ baseURL: BASE + '/v1', apiKey: 'btl_not_a_key', maxRetries: 0, fetch: recording });
  await expectError(() => bad.chat.completions.create({ model: 'btl-fast', messages: user('x') }), OpenAI.AuthenticationError, 401);
  const e = await expectError(() => oa.chat.completions.create({ model: 'btl-fast', temperature: 5, messages: user('x') }), OpenAI.BadRequestError, 400);
  assert(e.param === 'temperature' && e.type === 'invalid_request_error', `param ${e.param} type ${e.type}`);
  await expectError(() => oa.chat.completions.create({ model: 'gpt-9000', messages: user('x') }), OpenAI.NotFoundError, 404);
  await expectError(() => oa.chat.completions.create({ model: 'btl-embed', messages: user('x') }), OpenAI.BadRequestError, 400);
  await expectError(() => oa.chat.completions.create({ model: 'sim/gpt-4o-mini', messages: user('x [sim:status=503]') }), OpenAI.InternalServerError, 503);
  await expectError(() => oa.get('/no-such-route'), OpenAI.NotFoundError, 404);
});
await check('anthropic messages', async () => {
  const m = await an.messages.create({ model: 'btl-balanced', max_tokens: 256, messages: user('Hello!') });
  assert(m.content[0].text && m.stop_reason === 'end_turn' && m.usage.output_tokens > 0, JSON.stringify(m));
});
for (const model of ['btl-balanced', 'btl-fast']) {
  await check(`anthropic stream ${model}`, async () => {
    const m = await an.messages.stream({ model, max_tokens: 256, messages: user('Tell a story') }).finalMessage();
    assert(m.content[0].text && m.usage.output_tokens > 0, JSON.stringify(m.usage));
  });
  await check(`anthropic tools ${model}`, async () => {
    const tools = [{ name: 'get_weather', input_schema: weather }];
    const m = await an.messages.stream({ model, max_tokens: 256, tools, tool_choice: { type: 'any' }, messages: user('Weather in Paris?') }).finalMessage();
    const use = m.content.find((c) => c.type === 'tool_use');
    assert(use && m.stop_reason === 'tool_use', JSON.stringify(m.content));
    const m2 = await an.messages.create({ model, max_tokens: 256, tools, messages: [...user('Weather in Paris?'), { role: 'assistant', content: m.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '20C' }] }] });
    assert(m2.content[0]?.text, JSON.stringify(m2.content));
  });
}
await check('anthropic count_tokens', async () => {
  const r = await an.messages.countTokens({ model: 'btl-balanced', messages: user('Hello there, how are you?') });
  assert(r.input_tokens > 0, JSON.stringify(r));
});
await check('Anthropic error classes', async () => {
  const bad = new Anthropic({ baseURL: BASE, apiKey: 'btl_not_a_key', maxRetries: 0, fetch: recording });
  await expectError(() => bad.messages.create({ model: 'btl-balanced', max_tokens: 10, messages: user('x') }), Anthropic.AuthenticationError, 401);
  const e = await expectError(() => an.messages.create({ model: 'btl-balanced', messages: user('x') }), Anthropic.BadRequestError, 400);
  assert(e.error?.type === 'error' && e.error?.error?.type === 'invalid_request_error', JSON.stringify(e.error));
  await expectError(() => an.messages.create({ model: 'claude-nope', max_tokens: 10, messages: user('x') }), Anthropic.NotFoundError, 404);
});

console.log(JSON.stringify({ checks, calls }));
process.exit(checks.every((c) => c.ok) ? 0 : 1);
