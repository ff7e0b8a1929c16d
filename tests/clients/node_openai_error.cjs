// One chat request with the official openai SDK for Node, expected to be refused: prints the error as the SDK
// reports it, as one JSON line. Env: CLIENTS_NODE_DIR, GATEWAY_URL, GATEWAY_KEY, MODEL.
"use strict";
const { createRequire } = require("module");
const OpenAI = createRequire(process.env.CLIENTS_NODE_DIR + "/package.json")("openai");

async function main() {
  const client = new OpenAI({ baseURL: process.env.GATEWAY_URL + "/v1", apiKey: process.env.GATEWAY_KEY, maxRetries: 0 });
  try {
    await client.chat.completions.create({ model: process.env.MODEL, messages: [{ role: "user", content: "Hello" }] });
    console.log(JSON.stringify({ refused: false }));
  } catch (error) {
    console.log(JSON.stringify({ refused: true, status: error.status, code: error.code, type: error.type,
                                 message: error.message }));
  }
}
main();
