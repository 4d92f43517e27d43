"""A deterministic demo dataset in the import format (agents first, then calls and chats).

Two workspaces, three agents each (voice and chat), two published versions per agent and a
draft whose analysis configuration differs, so a backfill visibly changes the analysis.
Everything derives from `random.Random(seed)` and a fixed base time, never from `now()`:
the same seed gives the same file, byte for byte.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BASE_EPOCH_MS = 1761955200000  # 2025-11-01T00:00:00Z: sessions fall in the 30 days before it
DAY_MS = 86_400_000
WINDOW_DAYS = 30
CALL_SHARE = 0.75
TRANSFER_SHARE = 0.10
DEMO_WORKSPACES = ("ws_demo_dental", "ws_demo_telco")

Field = dict[str, Any]


def _preset(name: str, prompt: str) -> Field:
    return {"type": "system-presets", "name": name, "description": prompt}


def _string(name: str, description: str, examples: list[str], **extra: Any) -> Field:
    return {"type": "string", "name": name, "description": description, "examples": examples,
            **extra}


def _enum(name: str, description: str, choices: list[str], **extra: Any) -> Field:
    return {"type": "enum", "name": name, "description": description, "choices": choices,
            **extra}


def _boolean(name: str, description: str, **extra: Any) -> Field:
    return {"type": "boolean", "name": name, "description": description, **extra}


def _number(name: str, description: str, **extra: Any) -> Field:
    return {"type": "number", "name": name, "description": description, **extra}


@dataclass(frozen=True)
class _Version:
    model: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class _Agent:
    workspace_id: str
    agent_id: str
    name: str
    kind: str  # voice | chat
    team: str  # how another agent names it when transferring
    topics: tuple[str, ...]  # transcript templates this agent handles
    versions: tuple[_Version, _Version, _Version]  # v0, v1 published; v2 the draft


def _dental_agents() -> list[_Agent]:
    ws = "ws_demo_dental"
    intent = ["booking", "cancellation", "other"]
    front_desk = _Agent(ws, "dental_front_desk", "Front desk", "voice", "front desk",
                        ("booking", "reschedule", "insurance"), (
        _Version("gpt-4.1", (
            _preset("call_summary", "Summarize the call in two sentences."),
            _enum("intent", "Why the caller called.", intent))),
        _Version("claude-4.5-haiku", (
            _preset("call_summary", "Summarize the call in two sentences."),
            _enum("intent", "Why the caller called.", intent),
            _boolean("is_new_patient", "Whether the caller is a new patient."))),
        _Version("claude-haiku-4-5", (
            _preset("call_summary", "Write a 1–5 word summary of the call."),
            _preset("call_successful", "Successful if an appointment was booked or moved."),
            _enum("intent", "Why the caller called.",
                  ["booking", "cancellation", "reschedule", "billing", "other"], required=True),
            _boolean("is_new_patient", "Whether the caller is a new patient."),
            _number("party_size", "How many people the appointment is for."),
            _string("preferred_time", "When the caller wants to come in.",
                    ["Tuesday 10am", "next week, mornings"]))),
    ))
    billing = _Agent(ws, "dental_billing", "Billing specialist", "voice", "billing",
                     ("billing_dispute", "insurance"), (
        _Version("claude-sonnet-4-5", (
            _preset("call_successful", "Successful if the billing question was resolved."),
            _enum("billing_topic", "Billing topic.", ["refund", "invoice", "insurance"]),
            _number("disputed_amount", "Amount in dispute, in dollars."))),
        _Version("claude-sonnet-4-5", (
            _preset("call_successful", "Successful if the billing question was resolved."),
            _enum("billing_topic", "Billing topic.",
                  ["refund", "invoice", "insurance", "payment_plan"]),
            _number("disputed_amount", "Amount in dispute, in dollars."))),
        _Version("claude-4.5-sonnet", (
            _preset("call_successful",
                    "Successful if the billing question was resolved without escalation."),
            _preset("user_sentiment", "Rate the caller's sentiment at the end of the call."),
            _enum("billing_topic", "Billing topic.",
                  ["refund", "invoice", "insurance", "payment_plan", "other"]),
            _number("disputed_amount", "Amount in dispute, in dollars.", required=True),
            _string("insurance_provider", "The caller's insurer, if named.",
                    ["Delta Dental", "Cigna"]),
            _boolean("escalated", "Whether the caller asked for a supervisor."))),
    ))
    chat = _Agent(ws, "dental_web_chat", "Website chat", "chat", "chat",
                  ("chat_insurance", "chat_booking", "chat_hours"), (
        _Version("gpt-4.1", (
            _preset("chat_summary", "One sentence summary of the chat."),)),
        _Version("claude-4.5-haiku", (
            _preset("chat_summary", "One sentence summary of the chat."),
            _boolean("asked_for_human", "Whether the user asked for a human."))),
        _Version("claude-haiku-4-5", (
            _preset("chat_summary", "Summarize the chat in under 15 words."),
            _preset("chat_successful", "Successful if the user got an answer or a booking."),
            _boolean("asked_for_human", "Whether the user asked for a human.", required=True),
            _enum("topic", "Main topic of the chat.",
                  ["insurance", "booking", "hours", "pricing", "other"]),
            _string("insurance_provider", "The user's insurer, if named.",
                    ["Delta Dental", "Aetna"]))),
    ))
    return [front_desk, billing, chat]


def _telco_agents() -> list[_Agent]:
    ws = "ws_demo_telco"
    issue = ["outage", "billing", "plan_change", "other"]
    support = _Agent(ws, "telco_support_line", "Support line", "voice", "support",
                     ("plan_change", "billing_dispute_telco", "outage"), (
        _Version("claude-4.5-haiku", (
            _preset("call_summary", "Summarize the call in two sentences."),
            _enum("issue", "The caller's issue.", issue))),
        _Version("claude-haiku-4-5", (
            _preset("call_summary", "Summarize the call in two sentences."),
            _enum("issue", "The caller's issue.", issue),
            _number("bill_amount", "The bill amount discussed, in dollars."))),
        _Version("claude-sonnet-4-5", (
            _preset("call_summary", "Summarize the call in one sentence."),
            _preset("call_successful", "Successful if the issue was resolved on this call."),
            _enum("issue", "The caller's issue.", [*issue[:-1], "roaming", "other"]),
            _number("bill_amount", "The bill amount discussed, in dollars."),
            _string("new_plan", "The plan the caller moved to, if any.",
                    ["Unlimited Plus", "Family 4 lines"]),
            _boolean("churn_risk", "Whether the caller threatened to leave.", required=True))),
    ))
    sales = _Agent(ws, "telco_chat_sales", "Sales chat", "chat", "sales",
                   ("chat_plan_change", "chat_billing"), (
        _Version("gpt-4.1", (
            _preset("chat_summary", "One sentence summary of the chat."),
            _enum("plan_interest", "Plan the user asked about.", ["prepaid", "unlimited"]))),
        _Version("gpt-4.1", (
            _preset("chat_summary", "One sentence summary of the chat."),
            _enum("plan_interest", "Plan the user asked about.",
                  ["prepaid", "unlimited", "family"]),
            _boolean("wants_callback", "Whether the user asked to be called back."))),
        _Version("claude-4.5-haiku", (
            _preset("chat_successful", "Successful if the user ordered or booked a callback."),
            _enum("plan_interest", "Plan the user asked about.",
                  ["prepaid", "unlimited", "family", "business"]),
            _number("lines_requested", "How many lines the user wants.", required=True),
            _boolean("wants_callback", "Whether the user asked to be called back."))),
    ))
    chat_support = _Agent(ws, "telco_chat_support", "Support chat", "chat", "support",
                          ("chat_device", "chat_billing"), (
        _Version("claude-haiku-4-5", (
            _preset("chat_summary", "One sentence summary of the chat."),
            _enum("issue", "The user's issue.", ["device", "billing", "other"]))),
        _Version("claude-haiku-4-5", (
            _preset("chat_summary", "One sentence summary of the chat."),
            _enum("issue", "The user's issue.", ["device", "billing", "other"]),
            _boolean("resolved", "Whether the issue was resolved in the chat."))),
        _Version("claude-sonnet-4-5", (
            _preset("user_sentiment", "The user's sentiment in their last three messages."),
            _enum("issue", "The user's issue.", ["device", "billing", "network", "other"]),
            _boolean("resolved", "Whether the issue was resolved in the chat."),
            _string("device_model", "The user's phone model.", ["iPhone 15", "Pixel 8"],
                    required=True),
            _number("wait_minutes", "How long the user says they waited, in minutes."))),
    ))
    return [support, sales, chat_support]


# Transcript templates: (role, text) with str.format placeholders filled per session.
_TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "booking": (
        ("agent", "Thanks for calling {clinic}, this is the front desk. How can I help?"),
        ("user", "Hi, I'm {name}. I'd like to book a cleaning for {party} people."),
        ("agent", "Of course. We have {day} at {time} or Friday at 2:30pm."),
        ("user", "{day} at {time} works. Do you need my date of birth?"),
        ("agent", "Yes please, and a phone number ending in {last4}?"),
        ("user", "It's 0{party}/1{party}/1988, and yes that's my number."),
        ("agent", "You're booked for {day} at {time} for {party}. See you then!"),
    ),
    "reschedule": (
        ("agent", "{clinic}, how can I help you today?"),
        ("user", "I need to reschedule the appointment for my {party} kids on {day}."),
        ("agent", "I see it, {time} with Dr. Ortiz, booking {ref}. When would suit you better?"),
        ("user", "Anything the week after, mornings please."),
        ("agent", "I've moved you to the following {day} at 9:15am."),
    ),
    "insurance": (
        ("agent", "Hello, you've reached {clinic}."),
        ("user", "Do you take {provider}? It's for {party} people in my family."),
        ("agent", "Let me check. What is the member id on the card?"),
        ("user", "It's {ref}."),
        ("agent", "We do. A cleaning is usually covered at 100%, fillings at 80%."),
        ("user", "So I'd pay about ${amount} for a filling?"),
        ("agent", "Roughly, yes. Would you like to book?"),
        ("user", "Not yet, thank you."),
    ),
    "billing_dispute": (
        ("agent", "Billing, this is Sam. How can I help?"),
        ("user", "I'm disputing a charge of ${amount}, billed twice for my visit on {day}."),
        ("agent", "Let me check invoice {ref}... I see the duplicate charge of ${amount}."),
        ("user", "Can you refund it? This is the second time this happened."),
        ("agent", "I've issued a refund of ${amount}; it takes 3 to 5 business days."),
        ("user", "Okay, thanks."),
    ),
    "plan_change": (
        ("agent", "Thanks for calling, this is support. What can I do for you?"),
        ("user", "I want to switch to the {plan} plan with {lines} lines."),
        ("agent", "{plan} with {lines} lines is ${amount} a month before taxes."),
        ("user", "That's more than I pay now. Any discount?"),
        ("agent", "With autopay it's ${amount2}. Shall I switch you from the next cycle?"),
        ("user", "Yes, go ahead."),
    ),
    "billing_dispute_telco": (
        ("agent", "Support, how can I help?"),
        ("user", "My bill is ${amount}, it's usually ${amount2}. What happened?"),
        ("agent", "I see {minutes} minutes of international calls on {day}."),
        ("user", "I never made those calls. I'll cancel if this isn't fixed."),
        ("agent", "I've credited ${amount2} back and opened ticket {ref}."),
    ),
    "outage": (
        ("agent", "Support line, how can I help?"),
        ("user", "My internet has been down since {time} yesterday, zip code 9410{party}."),
        ("agent", "There's an outage in your area affecting about {minutes}0 customers."),
        ("user", "When will it be back?"),
        ("agent", "The estimate is {time} today. I've added a ${amount2} credit."),
    ),
    "chat_insurance": (
        ("user", "Do you take {provider} insurance?"),
        ("agent", "Yes, we accept {provider}. Cleanings are covered twice a year."),
        ("user", "How much is a crown? About ${amount}?"),
        ("agent", "Crowns start at ${amount}; your plan typically covers 50%."),
        ("user", "Can I talk to a person?"),
    ),
    "chat_booking": (
        ("user", "hi, can I book a checkup for {party} kids?"),
        ("agent", "Sure! We have {day} at {time}. Does that work?"),
        ("user", "Yes. Name is {name}."),
        ("agent", "Done, {name}: {day} at {time} for {party}. Confirmation {ref}."),
    ),
    "chat_hours": (
        ("user", "are you open on saturdays?"),
        ("agent", "We're open Saturdays 9am to 1pm, and weekdays until 7pm."),
        ("user", "thanks!"),
    ),
    "chat_plan_change": (
        ("user", "What does {plan} cost for {lines} lines?"),
        ("agent", "{plan} for {lines} lines is ${amount}/month, ${amount2} with autopay."),
        ("user", "Can someone call me back tomorrow at {time}?"),
        ("agent", "Booked a callback for {time} tomorrow, reference {ref}."),
    ),
    "chat_billing": (
        ("user", "Why is my bill ${amount} this month?"),
        ("agent", "There's a one-time activation fee of ${amount2} on {day}."),
        ("user", "Nobody told me about that fee."),
        ("agent", "I've waived it; you'll see the credit on your next bill."),
    ),
    "chat_device": (
        ("user", "My {device} won't connect to 5G since the update."),
        ("agent", "Sorry about that! Please restart it and toggle airplane mode."),
        ("user", "Did that, still nothing. I waited {minutes} minutes for this chat."),
        ("agent", "I've reset your network profile; it should work within 10 minutes."),
        ("user", "It works now, thanks."),
    ),
}
_SUMMARIES = {
    "booking": "{name} booked a cleaning for {party} on {day} at {time}.",
    "reschedule": "Caller moved appointment {ref} from {day}.",
    "insurance": "Caller asked whether {provider} is accepted.",
    "billing_dispute": "Caller disputed a duplicate charge of ${amount}; refunded.",
    "plan_change": "Caller switched to {plan} with {lines} lines.",
    "billing_dispute_telco": "Caller disputed a ${amount} bill; ${amount2} credited.",
    "outage": "Caller reported an outage; ${amount2} credit applied.",
    "chat_insurance": "User asked about {provider} coverage.",
    "chat_booking": "User booked a checkup for {party} on {day}.",
    "chat_hours": "User asked about Saturday hours.",
    "chat_plan_change": "User asked about {plan} pricing and booked a callback.",
    "chat_billing": "User asked about a ${amount} bill; fee waived.",
    "chat_device": "User's {device} could not connect to 5G; fixed.",
}
_NAMES = ("Dana", "José", "Zoë", "Mia", "Liam", "Noah", "Amara", "Søren", "Chloé", "Ravi",
          "Yuki", "Björn", "Fatima", "Ngozi", "Łukasz")
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_TIMES = ("9am", "10:30am", "11am", "1pm", "3:45pm", "4pm")
_PLANS = ("Unlimited Plus", "Family Share", "Prepaid 15GB", "Business Pro")
_PROVIDERS = ("Delta Dental", "Cigna", "Aetna", "MetLife")
_DEVICES = ("iPhone 15", "Pixel 8", "Galaxy S24", "Moto G")
_CAMPAIGNS = ("fall-promo", "spring-recall", "retention-q4", "new-patient", "none")
_SENTIMENTS = ("Positive", "Negative", "Neutral", "Unknown")
_CLINICS = {"ws_demo_dental": "Bright Smile Dental", "ws_demo_telco": "Nimbus Mobile"}
_NUMBER_PREFIX = {"ws_demo_dental": "+1415555", "ws_demo_telco": "+1212555"}
_CALL_STATUSES = (("ended", 82), ("not_connected", 8), ("error", 5), ("ongoing", 5))
_CHAT_STATUSES = (("ended", 88), ("ongoing", 7), ("error", 5))


def _agent_objects(agent: _Agent) -> list[dict[str, Any]]:
    prefix = "post_chat_analysis" if agent.kind == "chat" else "post_call_analysis"
    return [
        {
            "object": "agent", "agent_id": agent.agent_id, "workspace_id": agent.workspace_id,
            "version": number, "is_published": number < 2, "agent_name": agent.name,
            "kind": agent.kind, f"{prefix}_model": version.model,
            f"{prefix}_data": [dict(item) for item in version.fields],
        }
        for number, version in enumerate(agent.versions)
    ]


def _weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([name for name, _ in options], [weight for _, weight in options])[0]


def _facts(rng: random.Random, workspace_id: str) -> dict[str, Any]:
    """Everything a template may mention; numbers everywhere, as in real transcripts."""
    amount = rng.randint(40, 480)
    return {
        "name": rng.choice(_NAMES), "day": rng.choice(_DAYS), "time": rng.choice(_TIMES),
        "party": rng.randint(1, 5), "amount": amount, "amount2": rng.randint(10, amount),
        "plan": rng.choice(_PLANS), "lines": rng.randint(1, 6), "ref": rng.randint(10000, 99999),
        "provider": rng.choice(_PROVIDERS), "device": rng.choice(_DEVICES),
        "minutes": rng.randint(3, 95), "last4": f"{rng.randint(0, 9999):04d}",
        "clinic": _CLINICS[workspace_id],
    }


def _turns(topic: str, facts: Mapping[str, Any]) -> list[dict[str, str]]:
    return [{"role": role, "content": text.format(**facts)} for role, text in _TEMPLATES[topic]]


def _custom_values(rng: random.Random, fields: Iterable[Field],
                   facts: Mapping[str, Any]) -> dict[str, Any]:
    """Plausible old values for the handling version's custom fields."""
    values: dict[str, Any] = {}
    for item in fields:
        if item["type"] == "enum":
            values[item["name"]] = rng.choice(item["choices"])
        elif item["type"] == "boolean":
            values[item["name"]] = rng.random() < 0.4
        elif item["type"] == "number":
            values[item["name"]] = facts["amount"] if "amount" in item["name"] else facts["party"]
    return values


@dataclass
class _Generator:
    rng: random.Random
    agents: list[_Agent]

    def session(self, index: int) -> dict[str, Any]:
        workspace_id = DEMO_WORKSPACES[0] if self.rng.random() < 0.55 else DEMO_WORKSPACES[1]
        kind = "call" if self.rng.random() < CALL_SHARE else "chat"
        agent_kind = "voice" if kind == "call" else "chat"
        candidates = [a for a in self.agents
                      if a.workspace_id == workspace_id and a.kind == agent_kind]
        agent = self.rng.choice(candidates)
        facts = _facts(self.rng, workspace_id)
        prefix = workspace_id.removeprefix("ws_demo_")
        session_id = f"{prefix}_{kind}_{index:06d}"
        if kind == "call":
            return self._call(session_id, agent, candidates, facts)
        return self._chat(session_id, agent, candidates, facts)

    def _base(self, agent: _Agent, status: str, facts: Mapping[str, Any],
              candidates: list[_Agent]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        version = 1 if rng.random() < 0.6 else 0
        start = BASE_EPOCH_MS - rng.randint(1, WINDOW_DAYS * DAY_MS)
        turns, transfers, topic = self._conversation(agent, status, facts, candidates)
        duration: int | None = rng.randint(30_000, 600_000) if turns else 0
        if status == "ongoing":
            duration = None
        elif status == "error":
            duration = rng.randint(1_000, 20_000)
        fields = [f for f in agent.versions[version].fields if f["type"] != "system-presets"]
        base: dict[str, Any] = {
            "workspace_id": agent.workspace_id, "agent_id": agent.agent_id,
            "agent_version": version, "start_timestamp": start,
            "end_timestamp": None if duration is None else start + duration,
            "duration_ms": duration,
            "metadata": self._metadata(),
            "_custom": _custom_values(rng, fields, facts),
            "_summary": _SUMMARIES[topic].format(**facts) if topic else "No conversation.",
        }
        if transfers:
            base["agent_transfers"] = transfers
        return base, turns

    def _conversation(self, agent: _Agent, status: str, facts: Mapping[str, Any],
                      candidates: list[_Agent]) -> tuple[list[dict[str, str]],
                                                         list[dict[str, Any]], str | None]:
        """Turns, transfers and the opening topic (None when nobody answered)."""
        if status == "not_connected":
            return [], [], None
        topic = self.rng.choice(agent.topics)
        turns = _turns(topic, facts)
        if status == "error":
            return turns[:2], [], topic
        others = [a for a in candidates if a.agent_id != agent.agent_id]
        if not others or self.rng.random() >= TRANSFER_SHARE:
            return turns, [], topic
        destination = self.rng.choice(others)
        handoff = {"role": "agent",
                   "content": f"One moment, I'm transferring you to our {destination.team} team."}
        at_ms = self.rng.randint(15_000, 90_000)
        transfer = {
            "from_agent_id": agent.agent_id, "to_agent_id": destination.agent_id,
            "post_call_analysis_setting": self.rng.choice(
                ["only_destination_agent", "both_agents"]),
            "at_ms": at_ms,
        }
        tail = _turns(self.rng.choice(destination.topics), facts)
        return [*turns[:3], handoff, *tail], [transfer], topic

    def _metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = {"campaign": self.rng.choice(_CAMPAIGNS),
                                    "priority": self.rng.randint(1, 5)}
        if self.rng.random() < 0.3:
            metadata["crm_id"] = f"CRM-{self.rng.randint(100000, 999999)}"
        return metadata

    def _variables(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        if self.rng.random() < 0.2:
            return {}
        return {"customer_name": facts["name"], "account_tier": self.rng.choice(
            ["gold", "silver", "basic"]), "open_balance": str(facts["amount"])}

    def _transcript_keys(self, turns: list[dict[str, str]]) -> dict[str, Any]:
        # A few sessions carry Retell's plain `transcript` string (import tolerance).
        if turns and self.rng.random() < 0.03:
            lines = [f"{t['role'].capitalize()}: {t['content']}" for t in turns]
            return {"transcript": "\n".join(lines)}
        return {"transcript_object": turns}

    def _analysis(self, topic_summary: str, custom: dict[str, Any],
                  prefix: str) -> dict[str, Any]:
        rng = self.rng
        analysis: dict[str, Any] = {
            f"{prefix}_summary": topic_summary,
            f"{prefix}_successful": rng.random() < 0.7,
            "user_sentiment": rng.choices(_SENTIMENTS, [35, 20, 40, 5])[0],
            "custom_analysis_data": custom,
        }
        if rng.random() < 0.04:  # older exports with missing keys (import tolerance)
            analysis.pop(f"{prefix}_successful")
            analysis.pop("custom_analysis_data")
        return analysis

    def _call(self, call_id: str, agent: _Agent, candidates: list[_Agent],
              facts: Mapping[str, Any]) -> dict[str, Any]:
        rng = self.rng
        status = _weighted(rng, _CALL_STATUSES)
        base, turns = self._base(agent, status, facts, candidates)
        custom, summary = base.pop("_custom"), base.pop("_summary")
        call: dict[str, Any] = {"object": "call", "call_id": call_id, **base,
                                "call_status": status, **self._transcript_keys(turns)}
        call.update(self._telephony(agent.workspace_id, status, bool(base.get("agent_transfers"))))
        call["retell_llm_dynamic_variables"] = self._variables(facts)
        if status != "ongoing":
            analysis = self._analysis(summary, custom, "call")
            analysis["in_voicemail"] = call.get("disconnection_reason") == "voicemail_reached"
            call["call_analysis"] = analysis
        return call

    def _telephony(self, workspace_id: str, status: str, transferred: bool) -> dict[str, Any]:
        rng = self.rng
        ours = f"{_NUMBER_PREFIX[workspace_id]}0100"
        theirs = f"{_NUMBER_PREFIX[workspace_id]}{rng.randint(1000, 9999)}"
        out: dict[str, Any] = {"disconnection_reason": _disconnection(rng, status, transferred)}
        if status != "not_connected" and rng.random() < 0.2:
            out.update(call_type="web_call", direction=None, from_number=None, to_number=None)
            return out
        direction = "outbound" if status == "not_connected" or rng.random() < 0.35 else "inbound"
        out.update(call_type="phone_call", direction=direction,
                   from_number=ours if direction == "outbound" else theirs,
                   to_number=theirs if direction == "outbound" else ours)
        if direction == "outbound" and rng.random() < 0.6:
            batch = rng.randint(1, 12)
            out["batch_call_id"] = f"batch_{workspace_id.removeprefix('ws_demo_')}_{batch:02d}"
        elif rng.random() < 0.5:
            out["batch_call_id"] = None  # absent on the other half (import tolerance)
        return out

    def _chat(self, chat_id: str, agent: _Agent, candidates: list[_Agent],
              facts: Mapping[str, Any]) -> dict[str, Any]:
        status = _weighted(self.rng, _CHAT_STATUSES)
        base, turns = self._base(agent, status, facts, candidates)
        custom, summary = base.pop("_custom"), base.pop("_summary")
        chat: dict[str, Any] = {"object": "chat", "chat_id": chat_id, **base,
                                "chat_status": status, **self._transcript_keys(turns),
                                "dynamic_variables": self._variables(facts)}
        if status != "ongoing":
            chat["chat_analysis"] = self._analysis(summary, custom, "chat")
        return chat


def _disconnection(rng: random.Random, status: str, transferred: bool) -> str | None:
    if status == "not_connected":
        return rng.choice(["dial_no_answer", "dial_busy", "dial_failed"])
    if status == "error":
        return "error_unknown"
    if status == "ongoing":
        return None
    if transferred:
        return "call_transfer"
    return rng.choices(["user_hangup", "agent_hangup", "voicemail_reached", "inactivity"],
                       [60, 30, 6, 4])[0]


def generate_demo_dataset(seed: int = 7, sessions: int = 2400) -> list[dict[str, Any]]:
    """Import-format objects, agents first; the same seed always gives the same list."""
    agents = [*_dental_agents(), *_telco_agents()]
    objects: list[dict[str, Any]] = [obj for agent in agents for obj in _agent_objects(agent)]
    generator = _Generator(random.Random(seed), agents)
    objects.extend(generator.session(index) for index in range(1, sessions + 1))
    return objects


def write_jsonl(objects: Iterable[Mapping[str, Any]], path: Path) -> int:
    """Write one JSON object a line, UTF-8 and not ASCII-escaped; returns the line count."""
    count = 0
    with Path(path).open("w", encoding="utf-8", newline="\n") as handle:
        for obj in objects:
            handle.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
            count += 1
    return count


__all__ = ["BASE_EPOCH_MS", "DEMO_WORKSPACES", "generate_demo_dataset", "write_jsonl"]
