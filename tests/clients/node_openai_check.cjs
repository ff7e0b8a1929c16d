// The official openai SDK for Node against the gateway: a streamed tool call, then a streamed answer that uses
// the tool's result, both with usage. Prints one JSON line. Env: CLIENTS_NODE_DIR, GATEWAY_URL, GATEWAY_KEY, MODEL, TAG.
"use strict";
const { createRequire } = require("module");
const requireFromTools = createRequire(process.env.CLIENTS_NODE_DIR + "/package.json");
const OpenAI = requireFromTools("openai");

const tools = [{
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
}];

async function streamed(client, messages) {
  const stream = await client.chat.completions.create({
    model: process.env.MODEL, messages, tools, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let finish = null;
  let gateway = null;  // the gateway's {cost_usd, model, provider, route_reason}, next to the usage
  const calls = {};
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    if (chunk.x_gateway || (chunk.usage && chunk.usage.x_gateway)) gateway = chunk.x_gateway || chunk.usage.x_gateway;
    for (const choice of chunk.choices || []) {
      if (choice.finish_reason) finish = choice.finish_reason;
      const delta = choice.delta || {};
      if (delta.content) text += delta.content;
      for (const call of delta.tool_calls || []) {
        const slot = calls[call.index] || (calls[call.index] = { id: "", name: "", arguments: "" });
        if (call.id) slot.id = call.id;
        if (call.function && call.function.name) slot.name += call.function.name;
        if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
      }
    }
  }
  return { text, usage, finish, gateway, calls: Object.values(calls) };
}

async function main() {
  const client = new OpenAI({ baseURL: process.env.GATEWAY_URL + "/v1", apiKey: process.env.GATEWAY_KEY, maxRetries: 0 });
  const messages = [{ role: "user", content: `What is the weather in Paris? (${process.env.TAG})` }];
  const first = await streamed(client, messages);
  const call = first.calls[0];
  messages.push({ role: "assistant", content: null,
                  tool_calls: [{ id: call.id, type: "function", function: { name: call.name, arguments: call.arguments } }] });
  messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify({ city: "Paris", sky: "clear" }) });
  const second = await streamed(client, messages);
  console.log(JSON.stringify({ first, second }));
}

main().catch((error) => { console.error(String(error && error.stack || error)); process.exit(1); });
