"""Drives Stockade's whole OAuth + MCP flow with the official Python SDK (`mcp`):
discovery, dynamic registration, PKCE, the login form (posted by this script
instead of a browser), the code exchange, a tool call, a refresh through the
SDK's own refresh path, and a second tool call; then the SDK's high-level
`Client` in its default mode (it probes `server/discover` and speaks MCP
2026-07-28 when the server does) lists the tools and calls one with the
same tokens; and with its sampling and elicitation callbacks it calls tools
that ask the client something (MCP 2026-07-28 answers `input_required`; the
SDK runs the callback and retries with the answer).

Usage: python flow.py MCP_URL PASSWORD
Prints one JSON object on stdout; exits non-zero on any failure.
"""

import asyncio
import json
import re
import sys
import time
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp import Client, types
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# Nothing listens here: the script reads the code from the redirect itself.
REDIRECT = "http://127.0.0.1:47124/callback"


class MemoryStorage(TokenStorage):
    """Keeps tokens and the registration in memory, recording every save."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None
        self.saved: list[OAuthToken] = []

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens
        self.saved.append(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Plays the user: receives the authorization URL, logs in, hands back the code."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.url: str | None = None

    async def redirect(self, url: str) -> None:
        self.url = url

    async def callback(self) -> AuthorizationCodeResult:
        assert self.url, "no authorization URL"
        sent = parse_qs(urlparse(self.url).query)
        assert sent.get("code_challenge_method") == ["S256"], sent
        async with httpx2.AsyncClient(follow_redirects=False) as http:
            page = await http.get(self.url)
            if page.status_code != 200:
                raise RuntimeError(f"login page: HTTP {page.status_code}: {page.text}")
            m = re.search(r'name=csrf value="([^"]+)"', page.text)
            if not m:
                raise RuntimeError("no CSRF field on the login page")
            action = f"{urlparse(self.url).scheme}://{urlparse(self.url).netloc}/authorize"
            res = await http.post(action, data={"csrf": m.group(1), "password": self.password, "action": "approve"})
            location = res.headers.get("location")
            if res.status_code != 303 or not location:
                raise RuntimeError(f"login: HTTP {res.status_code}: {res.text}")
        back = urlparse(location)
        if f"{back.scheme}://{back.netloc}{back.path}" != REDIRECT:
            raise RuntimeError(f"redirected elsewhere: {location}")
        q = parse_qs(back.query)
        if q.get("state") != sent.get("state"):
            raise RuntimeError("state was not echoed")
        return AuthorizationCodeResult(code=q["code"][0], state=q["state"][0], iss=q.get("iss", [None])[0])


def text(result) -> str:
    return "\n".join(c.text for c in result.content if getattr(c, "type", None) == "text")


async def call_greet(url: str, provider: OAuthClientProvider, name: str) -> tuple[list[str], str]:
    async with create_mcp_http_client(auth=provider) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool("greet", {"name": name})
                return sorted(t.name for t in tools.tools), text(result)


async def modern_greet(url: str, provider: OAuthClientProvider, name: str) -> dict:
    """`Client` as the SDK's README shows it, in its default mode ("auto")."""
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            result = await client.call_tool("greet", {"name": name})
            return {
                "protocol_version": client.session.protocol_version,
                "tools": sorted(t.name for t in tools.tools),
                "greet": text(result),
            }


async def modern_questions(url: str, provider: OAuthClientProvider) -> dict:
    """Tools that ask their client: the SDK's callbacks answer, round trips and all."""
    asked: list[str] = []

    async def sample(context, params: types.CreateMessageRequestParams):
        asked.append("sampling: " + params.messages[0].content.text)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="Paris"),
            model="flow-test-model",
            stop_reason="endTurn",
        )

    async def elicit(context, params: types.ElicitRequestParams):
        asked.append("elicitation: " + params.message)
        return types.ElicitResult(action="accept", content={"username": "ada", "email": "ada@example.org"})

    async with create_mcp_http_client(auth=provider) as http:
        async with Client(
            streamable_http_client(url, http_client=http),
            sampling_callback=sample,
            elicitation_callback=elicit,
        ) as client:
            sampled = await client.call_tool("test_sampling", {"prompt": "Capital of France?"})
            elicited = await client.call_tool("test_elicitation", {"message": "Who are you?"})
            return {
                "protocol_version": client.session.protocol_version,
                "sampling": text(sampled),
                "elicitation": text(elicited),
                "asked": asked,
            }


async def main(url: str, password: str) -> dict:
    storage = MemoryStorage()
    browser = Browser(password)
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="Python SDK flow test",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    out: dict = {}
    # 1. Discovery, registration, PKCE, login, code exchange, then the tool call.
    out["tools"], out["greet"] = await call_greet(url, provider, "Python")
    out["registered_client"] = storage.client.client_id if storage.client else None
    first = storage.tokens
    assert first and first.refresh_token, "no refresh token"

    # 2. The access token is past its expiry as far as the SDK knows: it refreshes.
    provider.context.token_expiry_time = time.time() - 1
    _, out["greet_after_refresh"] = await call_greet(url, provider, "again")
    second = storage.tokens
    out["refreshed"] = bool(
        second and second.refresh_token != first.refresh_token and second.access_token != first.access_token
    )
    out["token_saves"] = len(storage.saved)

    # 3. The high-level Client in its default mode: MCP 2026-07-28, no session.
    out["modern"] = await modern_greet(url, provider, "modern")

    # 4. Tools that ask the client (sampling, elicitation) through the callbacks.
    out["questions"] = await modern_questions(url, provider)
    out["ok"] = (
        out["refreshed"]
        and "Hello, Python" in out["greet"]
        and "Hello, again" in out["greet_after_refresh"]
        and out["token_saves"] == 2
        and out["modern"]["protocol_version"] == "2026-07-28"
        and "Hello, modern" in out["modern"]["greet"]
        and out["modern"]["tools"] == out["tools"]
        and out["questions"]["sampling"] == "LLM response: Paris"
        and "action=accept" in out["questions"]["elicitation"]
        and out["questions"]["asked"] == ["sampling: Capital of France?", "elicitation: Who are you?"]
    )
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python flow.py MCP_URL PASSWORD", file=sys.stderr)
        sys.exit(2)
    try:
        result = asyncio.run(main(sys.argv[1], sys.argv[2]))
    except BaseException as e:  # noqa: BLE001 - report anything, then fail
        import traceback

        traceback.print_exc()
        print(f"flow failed: {e!r}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(result))
    sys.exit(0 if result["ok"] else 1)
