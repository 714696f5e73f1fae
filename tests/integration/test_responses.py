"""Issue 13: the Responses API's event stream through the gateway.

What a client sees:
- a streaming miss of POST /v1/responses is relayed live and recorded; the
  entry is the final response (response.completed's "response"), so a plain
  request is served from a streamed entry and a streaming request from a
  plain one;
- a streaming hit is a valid event sequence: "event:" names that match the
  data's type, sequence numbers 0, 1, 2, ..., response.created first,
  response.completed (with usage) last, and deltas that add up to the
  final text and function-call arguments;
- a stream that ends without response.completed (response.incomplete, or
  cut off) is not stored.

The mock answers function tools with a function_call item and
text.format json_schema with a JSON document; max_output_tokens below the
answer's word count makes it end with response.incomplete, as OpenAI does.
"""

import json
import time

import requests

from conftest import cache_status

RESPONSES = "/v1/responses"

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather of a city",
                "parameters": {"type": "object", "properties": {
                    "city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city", "days"], "additionalProperties": False}}


def body_of(prompt, **extra):
    b = {"model": "gpt-4o-mini", "input": [{"role": "user", "content": prompt}]}
    b.update(extra)
    return b


def stream(gateway, body, headers=None):
    """POSTs body with "stream": true; returns the response and its events as
    (event name, data object) pairs."""
    r = requests.post(gateway.url + RESPONSES, json=dict(body, stream=True),
                      headers=headers or {}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for block in r.text.split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[len("event: "):]
            elif line.startswith("data: "):
                data.append(line[len("data: "):])
        events.append((name, json.loads("\n".join(data))))
    return r, events


def check_sequence(events):
    """The rules a client's stream helper relies on; returns the final
    response of response.completed."""
    types = [d["type"] for _, d in events]
    assert all(name == d["type"] for name, d in events), "event: names match the data's type"
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    assert types[0] == "response.created" and types[1] == "response.in_progress"
    assert types[-1] == "response.completed" and types.count("response.completed") == 1
    final = events[-1][1]["response"]
    assert final["status"] == "completed"
    u = final["usage"]
    assert u["input_tokens"] > 0 and u["output_tokens"] > 0
    assert u["total_tokens"] == u["input_tokens"] + u["output_tokens"]
    # The deltas add up to what the final response holds.
    for i, item in enumerate(final["output"]):
        added = [d for _, d in events
                 if d["type"] == "response.output_item.added" and d["output_index"] == i]
        done = [d for _, d in events
                if d["type"] == "response.output_item.done" and d["output_index"] == i]
        assert len(added) == 1 and done == [dict(done[0], item=item)]
        if item["type"] == "message":
            text = "".join(d["delta"] for _, d in events
                           if d["type"] == "response.output_text.delta" and d["output_index"] == i)
            assert text == item["content"][0]["text"]
            assert added[0]["item"]["content"] == []
        if item["type"] == "function_call":
            args = "".join(d["delta"] for _, d in events
                           if d["type"] == "response.function_call_arguments.delta"
                           and d["output_index"] == i)
            assert args == item["arguments"]
            assert added[0]["item"]["arguments"] == ""
    return final


def test_a_streamed_miss_is_relayed_recorded_and_serves_plain_requests(gateway, mock):
    body = body_of("stream then plain")
    miss, events = stream(gateway, body)
    assert miss.headers["X-Cache"] == "MISS"
    assert cache_status(miss.headers)["fwd"] == "uri-miss"
    final = check_sequence(events)
    plain = gateway.post(RESPONSES, body)
    assert plain.headers["X-Cache"] == "HIT", plain.text
    assert plain.headers["Content-Type"] == "application/json"
    assert plain.json() == final  # the stored entry is response.completed's response
    u = final["usage"]
    assert plain.headers["X-Cache-Tokens-Saved"] == f"{u['input_tokens']}+{u['output_tokens']}"
    assert mock.stats()["responses"] == 1


def test_a_streaming_hit_is_a_valid_event_sequence(gateway, mock):
    body = body_of("stream twice " + "word " * 60)
    _, first = stream(gateway, body)
    hit, again = stream(gateway, body)
    assert hit.headers["X-Cache"] == "HIT"
    final = check_sequence(again)
    assert final == first[-1][1]["response"]
    # The text came in several pieces, each event whole.
    assert sum(d["type"] == "response.output_text.delta" for _, d in again) > 3
    assert mock.stats()["responses"] == 1


def test_a_plain_entry_serves_a_streaming_request(gateway, mock):
    body = body_of("plain then stream")
    plain = gateway.post(RESPONSES, body)
    assert plain.headers["X-Cache"] == "MISS"
    hit, events = stream(gateway, body)
    assert hit.headers["X-Cache"] == "HIT"
    assert check_sequence(events) == plain.json()
    assert mock.stats()["responses"] == 1


def test_function_calls_survive_record_and_replay(gateway, mock):
    body = body_of("weather in Paris?", tools=[WEATHER_TOOL])
    _, live = stream(gateway, body)
    final = check_sequence(live)
    [call] = final["output"]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert set(json.loads(call["arguments"])) == {"city", "days"}
    _, replayed = stream(gateway, body)
    assert check_sequence(replayed) == final
    assert gateway.post(RESPONSES, body).json() == final
    # The second step (the tool's output sent back) is another request.
    step2 = dict(body, input=body["input"] + [
        {"type": "function_call", "call_id": call["call_id"], "name": call["name"],
         "arguments": call["arguments"]},
        {"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"}])
    _, answer = stream(gateway, step2)
    text = check_sequence(answer)["output"][0]["content"][0]["text"]
    assert "tool result: sunny" in text
    assert mock.stats()["responses"] == 2


def test_json_schema_answers_survive_record_and_replay(gateway, mock):
    fmt = {"type": "json_schema", "name": "city", "strict": True,
           "schema": {"type": "object", "properties": {
               "name": {"type": "string"}, "population": {"type": "integer"},
               "kind": {"type": "string", "enum": ["capital", "town"]}},
               "required": ["name", "population", "kind"], "additionalProperties": False}}
    body = body_of("describe Paris", text={"format": fmt})
    _, live = stream(gateway, body)
    final = check_sequence(live)
    doc = json.loads(final["output"][0]["content"][0]["text"])
    assert set(doc) == {"name", "population", "kind"} and doc["kind"] == "capital"
    _, replayed = stream(gateway, body)
    assert check_sequence(replayed) == final


def test_a_stream_split_anywhere_is_recorded_whole(gateway, mock):
    body = body_of("split me " + "into bytes " * 20, mock={"split": "bytes"})
    _, live = stream(gateway, body)
    final = check_sequence(live)
    plain = gateway.post(RESPONSES, body)
    assert plain.headers["X-Cache"] == "HIT" and plain.json() == final


def test_a_stream_ending_with_response_incomplete_is_not_stored(gateway, mock):
    body = body_of("this answer is cut by the token limit", max_output_tokens=3)
    for n in (1, 2):
        r, events = stream(gateway, body)
        assert r.headers["X-Cache"] == "MISS"
        assert "stored" not in cache_status(r.headers)
        assert events[-1][0] == "response.incomplete"  # relayed as it came
        assert events[-1][1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
        assert mock.stats()["responses"] == n


def test_a_cut_stream_is_not_stored(gateway, mock):
    body = body_of("cut me off " + "word " * 40, mock={"fault": "cut-stream"})
    for n in (1, 2):
        r = requests.post(gateway.url + RESPONSES, json=dict(body, stream=True), stream=True,
                          timeout=30, headers={"Accept-Encoding": "identity"})  # raw SSE bytes
        assert r.headers["X-Cache"] == "MISS"
        got = b""
        try:
            for chunk in r.raw.stream(4096, decode_content=False):
                got += chunk
        except Exception:
            pass  # the cut reaches the client as a broken chunked body
        r.close()
        assert b"response.created" in got and b"response.completed" not in got
        assert mock.stats()["responses"] == n


def test_a_streaming_miss_sends_the_body_unchanged(gateway, mock):
    """stream_options.include_usage is a chat completions flag: the Responses
    API always sends usage in response.completed, so the gateway adds nothing
    to the body a streaming miss sends. The mock's answer id is a hash of the
    whole body it got: the same as when asked directly."""
    body = dict(body_of("no usage option"), stream=True)
    direct = requests.post(mock.url + "/responses", json=body, timeout=30)
    _, events = stream(gateway, body)
    first = json.loads(direct.text.split("\n\n")[0].split("data: ", 1)[1])
    assert events[0][1]["response"]["id"] == first["response"]["id"]


def test_identical_streams_in_flight_share_one_upstream_call(gateway, mock):
    """A streaming follower gets the leader's live events (everything so far
    first), a plain one the final response: one upstream call for all."""
    import threading
    body = body_of("shared stream " + "word " * 30, mock={"chunk_delay_ms": 20})
    got = {}

    def streamer(name):
        got[name] = stream(gateway, body)

    def plain():
        got["plain"] = gateway.post(RESPONSES, body)

    lead = threading.Thread(target=streamer, args=("lead",))
    lead.start()
    time.sleep(0.15)  # the leader's stream is under way
    others = [threading.Thread(target=streamer, args=("follow",)), threading.Thread(target=plain)]
    for t in others:
        t.start()
    for t in [lead, *others]:
        t.join(30)
    final = check_sequence(got["lead"][1])
    assert check_sequence(got["follow"][1]) == final
    assert got["follow"][0].headers["X-Cache"] == "COALESCED"
    assert got["plain"].headers["X-Cache"] == "COALESCED"
    assert got["plain"].json() == final
    assert mock.stats()["responses"] == 1


def test_store_true_goes_upstream_and_does_not_change_the_key(gateway, mock):
    """store: true asks OpenAI to keep a copy; it cannot change the answer, so
    it is out of the key (the same entry answers with or without it), and it
    reaches the upstream as the client sent it: the mock's answer id is a hash
    of the body it got, the same as when the mock is asked directly."""
    body = body_of("kept or not, the same answer", store=True)
    direct = requests.post(mock.url + "/responses", json=body, timeout=30).json()
    first = gateway.post(RESPONSES, body)
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    assert first.json()["id"] == direct["id"]
    again = gateway.post(RESPONSES, body_of("kept or not, the same answer"))
    assert again.headers["X-Cache"] == "HIT"
    assert again.headers["X-Cache-Key"] == first.headers["X-Cache-Key"]
    assert mock.stats()["responses"] == 2  # the direct call and the miss
