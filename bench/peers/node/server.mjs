// The kind of server Stockade replaces (the seeds' pattern): the official MCP
// TypeScript SDK on express, stateless Streamable HTTP, a bearer token checked on
// every request, and a `greet` tool. The benchmark's peer (bench/run).
//
//   node server.mjs PORT TOKEN
import express from "express";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { z } from "zod";

const [port, token] = process.argv.slice(2);
if (!port || !token) {
  console.error("usage: node server.mjs PORT TOKEN");
  process.exit(2);
}

function buildServer() {
  const server = new McpServer({ name: "node-peer", version: "1.0.0" });
  server.registerTool(
    "greet",
    { description: "Greet someone by name", inputSchema: { name: z.string() } },
    async ({ name }) => ({ content: [{ type: "text", text: `Hello, ${name}!` }] }),
  );
  return server;
}

const app = express();
app.use(express.json());
app.post("/mcp", async (req, res) => {
  if (req.headers.authorization !== `Bearer ${token}`) {
    res.status(401).set("www-authenticate", "Bearer").end();
    return;
  }
  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
app.listen(Number(port), "127.0.0.1", () => {
  console.error(`node peer listening on http://127.0.0.1:${port}/mcp`);
});
