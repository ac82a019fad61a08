// Preload for the official conformance suite (`node --import ./bearer.mjs ...`):
// the suite cannot send headers, so this adds `Authorization: Bearer
// $MCP_BEARER` to every HTTP request the process makes (global fetch and
// undici.request both go through undici's global dispatcher). Everything else
// (Host, Origin, streaming) is left as the suite sends it, so the real bearer
// gate, Host check and SSE path are what it tests.
import { Agent, setGlobalDispatcher } from 'undici';

const token = process.env.MCP_BEARER;
if (!token) {
  console.error('bearer.mjs: MCP_BEARER is not set');
  process.exit(2);
}
const value = `Bearer ${token}`;
const withAuth = (headers) => {
  if (headers == null) return { authorization: value };
  if (Array.isArray(headers)) return [...headers, 'authorization', value];
  if (typeof headers[Symbol.iterator] === 'function' && typeof headers !== 'string') {
    return [...Array.from(headers).flat(), 'authorization', value];
  }
  return { ...headers, authorization: value };
};
class BearerAgent extends Agent {
  dispatch(options, handler) {
    return super.dispatch({ ...options, headers: withAuth(options.headers) }, handler);
  }
}
setGlobalDispatcher(new BearerAgent());
