// The official OpenAI Node SDK against the Worker: one generation of two images, and the
// `usage` it reads, printed as JSON for tests/e2e/test_openai_sdk.py to compare.
// Usage: node tests/sdk/openai_usage.mjs BASE_URL API_KEY PROMPT
import OpenAI from "openai";

const [base, apiKey, prompt] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0, timeout: 60_000 });
const result = await client.images.generate({ prompt, n: 2, size: "1024x1024" });
if (result.data.length !== 2) throw new Error(`expected 2 images, got ${result.data.length}`);
process.stdout.write(JSON.stringify(result.usage));
