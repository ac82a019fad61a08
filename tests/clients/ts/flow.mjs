// Drives Stockade's whole OAuth + MCP flow with the official TypeScript SDK:
// discovery, dynamic registration, PKCE, the login form (posted by this script
// instead of a browser), the code exchange, a tool call, a forced refresh and a
// second tool call.
//
// Usage: node flow.mjs MCP_URL PASSWORD
// Prints one JSON object on stdout; exits non-zero on any failure.

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [, , mcpUrl, password] = process.argv;
if (!mcpUrl || !password) {
  console.error("usage: node flow.mjs MCP_URL PASSWORD");
  process.exit(2);
}

// Nothing listens here: the script reads the code from the redirect itself.
const REDIRECT = "http://127.0.0.1:47123/callback";

/** An in-memory OAuthClientProvider, as a desktop client would keep on disk. */
class MemoryProvider {
  constructor() {
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.authorizationUrl = undefined;
    this.savedTokens = [];
  }
  get redirectUrl() {
    return REDIRECT;
  }
  get clientMetadata() {
    return {
      client_name: "TypeScript SDK flow test",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  }
  state() {
    return "ts-state-" + Math.random().toString(36).slice(2);
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
    this.savedTokens.push(tokens);
  }
  redirectToAuthorization(url) {
    this.authorizationUrl = new URL(url);
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error("no code verifier saved");
    return this._verifier;
  }
}

/** Plays the user: opens the login page, posts the password, returns the code. */
async function logIn(authorizationUrl) {
  const page = await fetch(authorizationUrl, { redirect: "manual" });
  const html = await page.text();
  if (page.status !== 200) throw new Error(`login page: HTTP ${page.status}: ${html}`);
  const m = html.match(/name=csrf value="([^"]+)"/);
  if (!m) throw new Error("no CSRF field on the login page");
  const action = new URL("/authorize", authorizationUrl);
  const res = await fetch(action, {
    method: "POST",
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ csrf: m[1], password, action: "approve" }),
  });
  const location = res.headers.get("location");
  if (res.status !== 303 || !location) throw new Error(`login: HTTP ${res.status}: ${await res.text()}`);
  const back = new URL(location);
  if (`${back.origin}${back.pathname}` !== REDIRECT) throw new Error(`redirected elsewhere: ${location}`);
  if (back.searchParams.get("state") !== authorizationUrl.searchParams.get("state")) {
    throw new Error("state was not echoed");
  }
  const code = back.searchParams.get("code");
  if (!code) throw new Error(`no code in ${location}`);
  return code;
}

function text(result) {
  return result.content.filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

async function connect(provider) {
  const client = new Client({ name: "stockade-ts-flow", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  await client.connect(transport);
  return { client, transport };
}

async function main() {
  const out = {};
  const provider = new MemoryProvider();

  // 1. Without tokens the SDK discovers, registers and sends us to log in.
  const client = new Client({ name: "stockade-ts-flow", version: "1.0.0" });
  const transport = new StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider });
  try {
    await client.connect(transport);
    throw new Error("connected without logging in");
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
  }
  if (!provider.authorizationUrl) throw new Error("the SDK did not ask for authorization");
  const authUrl = provider.authorizationUrl;
  out.registered_client = provider.clientInformation()?.client_id;
  out.pkce_method = authUrl.searchParams.get("code_challenge_method");
  out.resource = authUrl.searchParams.get("resource");

  // 2. The "browser" step, then the code exchange.
  const code = await logIn(authUrl);
  await transport.finishAuth(code);
  const first = provider.tokens();
  if (!first?.access_token || !first?.refresh_token) throw new Error("no tokens after finishAuth");

  // 3. Connect with the token, list tools, call one.
  const a = await connect(provider);
  const tools = await a.client.listTools();
  out.tools = tools.tools.map((t) => t.name).sort();
  const r1 = await a.client.callTool({ name: "greet", arguments: { name: "TypeScript" } });
  out.greet = text(r1);
  await a.client.close();

  // 4. Force a refresh: the access token goes bad, the refresh token stays.
  provider._tokens = { ...first, access_token: "expired-or-revoked" };
  const b = await connect(provider);
  const r2 = await b.client.callTool({ name: "greet", arguments: { name: "again" } });
  out.greet_after_refresh = text(r2);
  const second = provider.tokens();
  out.refreshed = second.refresh_token !== first.refresh_token && second.access_token !== "expired-or-revoked";
  out.token_saves = provider.savedTokens.length;
  await b.client.close();

  out.ok = out.refreshed && out.greet.includes("Hello, TypeScript") && out.greet_after_refresh.includes("Hello, again");
  console.log(JSON.stringify(out));
  if (!out.ok) process.exit(1);
}

main().catch((e) => {
  console.error(`flow failed: ${e?.stack ?? e}`);
  process.exit(1);
});
