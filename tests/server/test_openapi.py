"""/openapi.json describes what the server really takes: each POST's body (the routes read
bodies themselves, so the document would otherwise have none), narrowed to this server."""

import pytest

POSTS = {"/v1/completions": "CompletionBody", "/v1/chat/completions": "ChatBody",
         "/v1/embeddings": "EmbeddingBody", "/tfamily/distribution": "DistributionBody",
         "/tfamily/attention": "AttentionBody"}


@pytest.fixture(scope="module")
def doc(server):
    import httpx
    return httpx.get(server.url + "/openapi.json", timeout=10).json()


@pytest.mark.parametrize("path", POSTS)
def test_every_post_documents_its_body(doc, path):
    body = doc["paths"][path]["post"]["requestBody"]
    assert body["required"] is True
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert ref.endswith(POSTS[path]) and "model" in schema["required"]
    assert schema["properties"]["model"]["enum"] == ["tiny"]  # the one model this server serves
    responses = doc["paths"][path]["post"]["responses"]
    assert {"200", "400", "404", "413"} <= set(responses) and "422" not in responses


def test_the_document_states_the_servers_limits(doc):
    s = doc["components"]["schemas"]
    comp, chat = s["CompletionBody"]["properties"], s["ChatBody"]["properties"]
    assert max(alt.get("maximum", 0) for alt in comp["max_tokens"]["anyOf"]) == 63  # context 64
    ids = next(alt for alt in comp["prompt"]["anyOf"] if alt.get("items", {}).get("type") == "integer")
    assert ids["items"]["maximum"] == s["EmbeddingBody"]["properties"]["input"]["anyOf"][2]["items"]["maximum"]
    assert comp["frequency_penalty"]["enum"] == [0] and comp["echo"]["enum"] == [False]
    assert {"required": ["prompt"], "properties": {"prompt": {"not": {"type": "null"}}}} in s["CompletionBody"]["oneOf"]
    assert chat["messages"]["items"]["$ref"].endswith("Message")
    assert s["Message"]["properties"]["content"]["anyOf"][1]["items"]["$ref"].endswith("TextPart")
    assert s["FewShot"]["properties"]["examples"]["items"]["$ref"].endswith("FewShotExample")
    assert doc["paths"]["/static/{name}"]["get"]["parameters"][0]["schema"]["enum"] == [
        "index.html", "playground.css", "playground.js"]
