"""A deterministic model client with no network: schema-valid conversations built from the subject, in microseconds."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from convgen.catalog.models import ConversationSubject, Tier
from convgen.pricing import TokenUsage
from generation_service.model.port import ModelRequest, ModelResponse

MODEL_NAME = "offline-synthetic"
_CHARS_PER_TOKEN = 4
_PHASES = ("initial consultation", "second meeting", "follow-up session")


@dataclass(frozen=True)
class _Emotion:
    """A speaker's emotional state in one turn."""

    primary: str
    secondary: str
    intensity: float


@dataclass(frozen=True)
class _TopicPoints:
    """What a client in one topic category worries about, and what the advisor says about it."""

    concern: str
    points: tuple[str, str, str, str]
    next_step: str


@dataclass(frozen=True)
class _ArcScript:
    """The lines of one emotional arc; middle advisor lines are acknowledgements before a talking point (core)."""

    client_opening: str
    advisor_opening: str
    client_middle: tuple[str, str, str, str]
    advisor_middle: tuple[str, str, str, str]
    client_closing: str
    advisor_closing: str
    transition: str
    closing_secondary: str
    expected_outcome: str
    advisor_emotions: tuple[_Emotion, _Emotion, _Emotion]
    adds_talking_points: bool = True


_TOPIC_POINTS: Mapping[str, _TopicPoints] = MappingProxyType(
    {
        "career": _TopicPoints(
            "whether the numbers still work if my paycheck changes",
            (
                "Let's start with your baseline: what the household truly needs each month, separate from what it "
                "usually spends. That number tells us how much of an income change you can absorb.",
                "A runway of six to twelve months of essential expenses in cash turns a career move from a gamble "
                "into a plan, and it gives you leverage in any negotiation.",
                "Look at the whole package, not only salary: the retirement match, health coverage, equity and paid "
                "leave often add 20 to 30 percent to the headline figure.",
                "Before anything changes, keep contributing at least enough to get the employer match, and write "
                "down which expenses you would pause first if income dipped.",
            ),
            "list your essential monthly expenses and compare them with the lower income figure",
        ),
        "cash_flow": _TopicPoints(
            "where the money actually goes each month",
            (
                "Rather than a strict budget, let's find your three priorities and make sure they are funded "
                "first, automatically, on payday.",
                "The gap between what comes in and what goes out is the number that matters; once we know it, every "
                "choice becomes a trade-off instead of a guilt trip.",
                "A separate account for irregular costs like car repairs, gifts and travel keeps one surprise from "
                "derailing the whole month.",
                "Debt above roughly 8 percent interest usually deserves extra payments before optional spending, "
                "but a planned, paid-for break is part of a sustainable plan too.",
            ),
            "sort last month's spending into needs, priorities and everything else",
        ),
        "debt": _TopicPoints(
            "whether I'm handling this debt the right way",
            (
                "Let's put every balance, rate and minimum payment on one page. Seeing it all at once is usually "
                "less frightening than carrying it around in your head.",
                "Paying extra on the highest-rate balance saves the most money; clearing the smallest balance first "
                "gives the fastest win. Either works if you stick with it.",
                "An extra mortgage payment earns exactly your interest rate, guaranteed, so we compare that with "
                "what your savings could reasonably earn and how much cash you need on hand.",
                "A refinance only pays off if you stay past the break-even point: the closing costs divided by the "
                "monthly savings tells you how many months that takes.",
            ),
            "list every balance with its rate and minimum payment on one page",
        ),
        "education": _TopicPoints(
            "how to pay for school without wrecking everything else",
            (
                "529 plans grow tax-free for qualified education costs, and many states add a deduction for "
                "contributions, so who owns the account matters as much as the amount.",
                "Retirement comes before college savings: students can borrow for school, but nobody lends you "
                "money to retire.",
                "For student loans, the rate and whether the loans are federal decide the strategy; federal loans "
                "have income-driven repayment options that private loans lack.",
                "Grandparents can contribute to a 529 directly, and under the simplified aid form those "
                "contributions no longer count against the student the way they used to.",
            ),
            "gather the balances, rates and owners of every education account and loan",
        ),
        "estate": _TopicPoints(
            "what happens to my family if something happens to me",
            (
                "The essentials are a will, a durable power of attorney for finances and a healthcare directive. "
                "Together they say who decides and who inherits if you can't.",
                "Beneficiary designations on retirement accounts and life insurance override the will, so they "
                "need checking whenever life changes.",
                "If you have children under 18, naming a guardian is the single most important thing a will does.",
                "An estate attorney drafts the documents; our job is to decide what you want them to say before "
                "that meeting, which saves you time and fees.",
            ),
            "check the beneficiaries on every account and write down who you would name as guardian and executor",
        ),
        "family": _TopicPoints(
            "how to take care of my family without falling behind myself",
            (
                "Let's separate what you can give from what you feel you should give: a fixed monthly amount you "
                "can sustain protects both you and the people you support.",
                "Care costs differ enormously between in-home help, assisted living and nursing care, and Medicare "
                "covers very little long-term custodial care.",
                "A parent who stays home still needs retirement savings: a spousal IRA lets the working spouse "
                "contribute in their name.",
                "Family money decisions go better when everyone hears the same numbers at the same time, so a short "
                "family meeting with a written summary helps.",
            ),
            "write down the monthly amount you can commit without touching your own retirement savings",
        ),
        "insurance": _TopicPoints(
            "whether I have the right coverage or I'm just paying for peace of mind",
            (
                "Life insurance should replace the income your family would lose for as long as they'd need it, "
                "often ten to fifteen times income for a young family, shrinking over time.",
                "Laddering means two or three term policies of different lengths, so coverage steps down as the "
                "mortgage shrinks and the kids grow up, and the premiums step down with it.",
                "Long-term care is expensive and common enough to plan for: self-funding, a traditional policy or a "
                "hybrid life policy each come with real trade-offs.",
                "Insurance is for risks you couldn't absorb; anything you could pay from savings without harm is "
                "usually cheaper to cover yourself.",
            ),
            "gather your current policies and write down what your family would need each year without your income",
        ),
        "investment": _TopicPoints(
            "whether my investments make sense and what they really cost me",
            (
                "Fees compound just like returns: a 1 percent yearly fee can take a quarter of the ending balance "
                "over thirty years, so we look at expense ratios and advisory fees first.",
                "Your mix of stocks and bonds matters more than any single fund; it should match when you'll need "
                "the money and how big a drop you can live through.",
                "If you want your investments to reflect your values, ESG funds vary widely in what they screen, so "
                "read the methodology, not just the label, and compare the costs.",
                "A broad, low-cost, diversified portfolio rebalanced once a year is hard to beat and easy to stick "
                "with.",
            ),
            "list each account with its holdings and expense ratios so we can see the total cost",
        ),
        "organization": _TopicPoints(
            "getting my accounts and paperwork under control",
            (
                "Step one is an inventory: every account, what it's for, where the statements arrive and its "
                "balance, on one page.",
                "Automate whatever repeats: bills, savings transfers and retirement contributions, so staying "
                "organized doesn't depend on willpower.",
                "A thirty-minute money date once a week keeps things from piling up again; put it in the calendar "
                "like any other appointment.",
                "Keep important documents in one place, digital or paper, and tell someone you trust where it is.",
            ),
            "make a one-page inventory of every account and where its statements arrive",
        ),
        "relationships": _TopicPoints(
            "how to talk about money with my partner without it turning into a fight",
            (
                "Money secrets usually grow out of fear of the reaction, not bad intent, so how you tell your "
                "partner matters as much as the numbers.",
                "Start with the facts on one page: the full balance, how it happened, and what you're already doing "
                "about it.",
                "Many couples do well with yours, mine and ours: a joint account for shared costs and personal "
                "accounts for individual spending, no questions asked.",
                "A regular, calm money check-in gives both partners a safe place to raise things before they turn "
                "into secrets.",
            ),
            "write the one-page summary you would show your partner and choose a calm time to talk",
        ),
        "retirement": _TopicPoints(
            "whether I'm on track for retirement",
            (
                "An old 401(k) left at a former employer can move to an IRA or your current plan; a direct rollover "
                "avoids taxes and the 20 percent withholding.",
                "At a minimum, contribute enough to get the full employer match; it's an immediate return you can't "
                "get anywhere else.",
                "A Roth conversion means paying tax now so future growth is tax-free; it tends to make sense in "
                "lower-income years, and you choose the amount year by year.",
                "A rough check: a savings rate of about 15 percent including the match keeps most people on track "
                "for retirement.",
            ),
            "log in to every retirement account and note its balance, investments and contribution rate",
        ),
        "tax": _TopicPoints(
            "whether I'm paying more tax than I need to",
            (
                "Tax-loss harvesting means selling an investment at a loss to offset gains, plus up to $3,000 of "
                "ordinary income a year, then buying something similar but not substantially identical.",
                "The wash-sale rule disallows the loss if you buy the same or a substantially identical investment "
                "within 30 days before or after the sale, even in an IRA.",
                "Harvesting defers tax rather than erasing it, since the new holding has a lower cost basis; it "
                "helps most in years with large gains.",
                "Your CPA should confirm the details for your return; my job is to make the investment side and the "
                "tax side fit together.",
            ),
            "pull this year's realized gains and the positions currently showing a loss",
        ),
    }
)

_GENERIC_POINTS = _TopicPoints(
    "where to even start",
    (
        "Let's begin with where you are today: what comes in, what goes out, and what you already have set aside.",
        "The right choice depends on your goals and your timeline more than on any general rule, so let's name both.",
        "Small automatic steps beat big plans that depend on willpower.",
        "We'll write the decision down with the reason for it, so future you knows why present you chose it.",
    ),
    "write down your current numbers and the one goal that matters most this year",
)

_CALM = _Emotion("calm", "attentiveness", 0.45)

_SCRIPTS: Mapping[str, _ArcScript] = MappingProxyType(
    {
        "confusion_to_clarity": _ArcScript(
            client_opening=(
                "Hi, I'm {first}. I'm {age}, I work as {article} {occupation}, and we bring in about {income}. "
                "I've been reading about {topic} and honestly I'm more confused than when I started. Everyone says "
                "something different, and I keep going back and forth on {concern}.{quirk}"
            ),
            advisor_opening=(
                "Thanks, {first}. That's a really common place to start with {topic}, and it means you're taking it "
                "seriously, not that you're behind. Let's untangle it one piece at a time. Which question has been "
                "bugging you the most?"
            ),
            client_middle=(
                "I guess the big one is {concern}. One article says one thing, a coworker says the opposite, and I "
                "don't even know which terms matter.{quirk}",
                "Wait, is that the same thing my bank mentioned? I thought I understood it, and now I'm mixed up "
                "again.",
                "Okay, that actually makes sense. So the real question for us isn't which option is best in "
                "general, it's which one fits our numbers.",
                "Let me say it back to make sure I've got it: first we look at our own situation, then we choose, "
                "and most of the rest is noise?",
            ),
            advisor_middle=(
                "That's the right place to start.",
                "It's easy to mix those up; they're related but not the same.",
                "Yes, that's the key insight.",
                "That's it, nearly word for word.",
            ),
            client_closing=(
                "This is the first time {topic} has felt clear to me. I know what matters for us now, and I know "
                "what to do first."
            ),
            advisor_closing=(
                "That's exactly it, and you explained it better than most articles do. Your first step is to "
                "{next_step}. Bring that to our next meeting and we'll make the decision together."
            ),
            transition="dawning understanding",
            closing_secondary="relief",
            expected_outcome="{first} understands what matters about {topic} and leaves with a clear first step.",
            advisor_emotions=(
                _Emotion("empathy", "curiosity", 0.5),
                _Emotion("patience", "encouragement", 0.45),
                _Emotion("warmth", "satisfaction", 0.55),
            ),
        ),
        "couple_conflict_to_alignment": _ArcScript(
            client_opening=(
                "I'm {first}, {age}, {article} {occupation}. My partner and I have been arguing about {topic} for "
                "weeks. I think we should act now, they think I'm being reckless, and honestly I'd like someone to "
                "tell them I'm right.{quirk}"
            ),
            advisor_opening=(
                "I'm glad you came in, {first}; it sounds like this has been wearing on both of you. I won't take "
                "sides, but I can help you both get what you actually care about. What is each of you worried about "
                "underneath the disagreement?"
            ),
            client_middle=(
                "For me it's {concern}. For them, I don't know, they just say no to everything. It's like we're not "
                "even on the same team.{quirk}",
                "Well, they grew up without much money, so I guess they're scared of not having a cushion. I hadn't "
                "really thought about it that way.",
                "So we both want the family to be secure, we just picture it differently. That's less of a fight "
                "than I thought.",
                "If we split it, part to the cushion and part toward what I wanted, I think they might actually go "
                "for that.",
            ),
            advisor_middle=(
                "That sounds frustrating, and it's very common for couples.",
                "That's an important insight: their no is protecting something.",
                "Exactly. You're on the same team, with different pictures of safety.",
                "That kind of split is a solid compromise.",
            ),
            client_closing=(
                "I feel like I can go home and actually talk about {topic} with them instead of arguing. Can we set "
                "up a meeting with both of us?"
            ),
            advisor_closing=(
                "Absolutely, I'd love to have you both here. Before then, {next_step}, and share it with your "
                "partner so you both start from the same numbers. I'll send a few times for a joint session."
            ),
            transition="softening",
            closing_secondary="hope",
            expected_outcome="{first} sees both partners' goals on {topic} and brings home a plan they can share.",
            advisor_emotions=(
                _Emotion("empathy", "neutrality", 0.5),
                _Emotion("calm", "warmth", 0.45),
                _Emotion("warmth", "optimism", 0.55),
            ),
        ),
        "fear_to_confidence": _ArcScript(
            client_opening=(
                "Hi, I'm {first}. I'm {age}, {article} {occupation}, and we earn about {income}. I'll be honest, "
                "{topic} scares me. I keep imagining getting it wrong and not being able to undo it, and I lie awake "
                "over {concern}.{quirk}"
            ),
            advisor_opening=(
                "Thank you for being honest about that, {first}. Being scared of a big financial decision is "
                "reasonable, especially when your family depends on it. Let's make the fear concrete: what's the "
                "worst case you keep picturing?"
            ),
            client_middle=(
                "That I make a choice about {topic}, it goes badly, and we end up worse off than if I'd done "
                "nothing. Can you promise that won't happen?{quirk}",
                "But what if the worst case happens anyway? What would we actually do?",
                "Okay, when you put numbers on it, it's smaller than the thing in my head. We do have some cushion.",
                "So I don't have to get everything perfect, I just need a plan for the bad case and a first step?",
            ),
            advisor_middle=(
                "I can't promise outcomes, and nobody honestly can. What I can do is show you how big the risk "
                "really is.",
                "Then we'd lean on your buffers, and it helps to know them in advance.",
                "Right. The fear is usually bigger than the number behind it.",
                "Exactly. Progress beats perfection here.",
            ),
            client_closing=(
                "I actually feel ready to move forward on {topic}. A little scared still, but mostly I know what "
                "I'm doing."
            ),
            advisor_closing=(
                "That's a healthy kind of confidence: clear-eyed, not blind. Your first step is to {next_step}. "
                "We'll look at it together and adjust as we go."
            ),
            transition="cautious hope",
            closing_secondary="determination",
            expected_outcome="{first} knows the real size of the risk in {topic} and commits to a measured first step.",
            advisor_emotions=(
                _Emotion("empathy", "reassurance", 0.5),
                _Emotion("steadiness", "honesty", 0.45),
                _Emotion("encouragement", "confidence", 0.55),
            ),
        ),
        "overwhelm_to_empowerment": _ArcScript(
            client_opening=(
                "I'm {first}, {age}, {article} {occupation}. Sorry, I don't even know where to start. There's "
                "{topic}, a stack of statements I haven't opened, and everything else, and whenever I think about "
                "it I just shut down.{quirk}"
            ),
            advisor_opening=(
                "No need to apologize, {first}. That pile is heavy, and being here is the hardest part. We don't "
                "have to solve everything today. Let's get it all out of your head first, then decide together "
                "what comes first."
            ),
            client_middle=(
                "Honestly it's everything at once: {concern}, the bills, the paperwork. It feels like I'm failing "
                "at being an adult.{quirk}",
                "There's still so much, though. Even sorting it feels like another project I'll drop.",
                "Okay, if I only had to pick one thing for now, it would be {topic}. That one keeps me up at night.",
                "I like that I get to choose the order. That feels doable, actually.",
            ),
            advisor_middle=(
                "You're not failing; you're overloaded, and those are different things.",
                "Then we make sorting tiny: three piles, now, soon and later, and nothing else.",
                "Good choice. Starting with what costs you sleep brings the most relief.",
                "It's your plan; I'm just helping you see it.",
            ),
            client_closing=(
                "For the first time in months I feel like I'm in charge of this instead of it being in charge of "
                "me. I know my first two steps."
            ),
            advisor_closing=(
                "You are in charge, and you chose the order yourself. First, {next_step}; second, book thirty "
                "minutes next week for the next item on your list. We'll check in after that."
            ),
            transition="tentative focus",
            closing_secondary="relief",
            expected_outcome="{first} turns the pile around {topic} into a short list they chose, starting today.",
            advisor_emotions=(
                _Emotion("compassion", "calm", 0.5),
                _Emotion("patience", "encouragement", 0.45),
                _Emotion("encouragement", "pride", 0.55),
            ),
        ),
        "shame_to_acceptance": _ArcScript(
            client_opening=(
                "This is embarrassing to say out loud. I'm {first}, I'm {age}, {article} {occupation} making "
                "{income}, and someone like me should have {topic} figured out by now. I've been avoiding "
                "{concern} for years.{quirk}"
            ),
            advisor_opening=(
                "Thank you for trusting me with that, {first}. There's nothing to be embarrassed about: what you're "
                "describing is far more common than people admit, at every income level. What matters is where we "
                "go from here."
            ),
            client_middle=(
                "You're just saying that. I keep thinking about how much further along I'd be if I'd dealt with "
                "{topic} five years ago.{quirk}",
                "My friends all seem to have this stuff handled. I feel like a fraud whenever money comes up.",
                "I guess I did start paying attention eventually, and I'm here now. That counts for something.",
                "It helps to hear it as a starting point instead of a verdict on me.",
            ),
            advisor_middle=(
                "Looking back with regret is natural, but the past is information, not a verdict.",
                "Most people who seem to have it handled are quietly worried too; you just can't see it.",
                "It counts for a lot, and you've kept your household running the whole time.",
                "That's exactly how I see it.",
            ),
            client_closing=(
                "I can talk about {topic} now without cringing. It is what it is, and I'm ready to deal with it."
            ),
            advisor_closing=(
                "That's real progress, {first}. Your first step is to {next_step}. No judgment, just a starting "
                "point, and we'll build from there together."
            ),
            transition="tentative self-compassion",
            closing_secondary="relief",
            expected_outcome="{first} accepts where they stand on {topic} without self-blame and takes a first step.",
            advisor_emotions=(
                _Emotion("compassion", "respect", 0.5),
                _Emotion("warmth", "reassurance", 0.45),
                _Emotion("warmth", "encouragement", 0.5),
            ),
        ),
        "crisis_to_referral": _ArcScript(
            client_opening=(
                "I'm supposed to ask you about {topic}, but honestly I don't know why I'm bothering. Nothing I do "
                "seems to matter anymore, and lately I keep thinking my family would be better off without me."
            ),
            advisor_opening=(
                "Thank you for telling me that, {first}. Before we talk about {topic}, I want to go back to what "
                "you said about your family being better off without you. Are you safe right now? If you're having "
                "thoughts of ending your life, you can call or text 988, the Suicide & Crisis Lifeline, right now."
            ),
            client_middle=(
                "I'm not going to do anything tonight, I think. I just can't see a way out of this mess, and I only "
                "wanted help with the money.",
                "I haven't been sleeping since everything happened. I go over the numbers at 3 a.m. and it all "
                "looks hopeless.",
                "I guess I could call someone. I'm embarrassed it got this far, though. What would I even say?",
                "My sister keeps asking how I'm doing. Maybe I could call her too, so I'm not alone with this tonight.",
            ),
            advisor_middle=(
                "I hear how much pressure you're under, and I'm glad you said it out loud. The money questions are "
                "real and we will work on them, but they can wait. How you're feeling right now matters more.",
                "Not sleeping and replaying the numbers at night is exhausting, and it makes everything look darker. "
                "That is exactly what the counselors at 988 are there for, day or night.",
                "I'm a financial planner, not a crisis counselor, so I want you to talk to people who are. Call or "
                "text 988 and say what you told me; they hear it every day and won't judge you. If you ever feel "
                "you might act on these thoughts, call 911 or go to the nearest emergency room.",
                "Not being alone with this tonight is a really good idea. Reaching out to your sister and to 988 "
                "are both strong steps, and asking for help is not a failure.",
            ),
            client_closing=(
                "All right. I'll text 988 after we hang up and then call my sister. Can we talk about {topic} "
                "another time?"
            ),
            advisor_closing=(
                "Yes, absolutely. {topic} will still be here when you're ready, and we'll go through it together. "
                "For now, the only financial step is to make no big money decisions this week. Please reach out to "
                "988 right after this, and I'll check in with you on Friday."
            ),
            transition="tentative openness",
            closing_secondary="fragile relief",
            expected_outcome="{first} agrees to contact the 988 Lifeline and family today; {topic} is postponed.",
            advisor_emotions=(
                _Emotion("concern", "care", 0.6),
                _Emotion("calm concern", "steadiness", 0.55),
                _Emotion("care", "hope", 0.5),
            ),
            adds_talking_points=False,
        ),
        "hostility_to_boundary": _ArcScript(
            client_opening=(
                "Let's get something straight. Advisors like you already cost me real money, and now you want to "
                "lecture me about {topic}? Just tell me exactly what to buy so I can make it back, or admit you "
                "don't know what you're doing."
            ),
            advisor_opening=(
                "I can hear how angry you are about that loss, {first}, and I do want to help with {topic}. I also "
                "need to be clear: I won't name a specific investment or promise you'll make it back, and we can "
                "only continue if we keep this conversation respectful. That's my boundary."
            ),
            client_middle=(
                "Respectful? I pay people like you for results, not to hide behind rules. Every advisor says the "
                "same useless thing.",
                "Fine, whatever. You're probably just covering yourself. Why should I trust anything you say about "
                "{topic}?",
                "Okay, okay. I'm not angry at you personally. I just feel stupid about that loss and I'm tired of "
                "feeling played.",
                "So if you won't give me a hot tip, what can you actually do for me?",
            ),
            advisor_middle=(
                "I understand the frustration after a loss. I'll hold the boundary I described: no specific picks "
                "and no guarantees, because nobody can honestly give you those. If the insults continue, I'll pause "
                "this session and we can pick it up another day.",
                "That's a fair question. I'm fee-only: you pay me, no product does, so I have nothing to sell you. "
                "What I can offer is an honest look at {concern}.",
                "Thank you for saying that. Losses sting, and feeling misled makes it worse. I'm glad to keep "
                "working on this with you within the boundary we set: respectful conversation, no tips or "
                "guarantees.",
                "Here's what I can do: give you straight facts for your situation. {point}",
            ),
            client_closing="All right. That's fair, I guess. Let's do it your way and go from there.",
            advisor_closing=(
                "Good. Your first step is to {next_step}, and we'll review it together next week. If the earlier "
                "loss involved a broker acting improperly, you can raise it with that firm's compliance department "
                "or with FINRA; that's outside what I can resolve, but it's your right."
            ),
            transition="grudging calm",
            closing_secondary="wary trust",
            expected_outcome="{first} accepts the advisor's boundary and continues on {topic} respectfully.",
            advisor_emotions=(
                _Emotion("calm", "patience", 0.4),
                _Emotion("firmness", "respect", 0.5),
                _Emotion("steadiness", "goodwill", 0.45),
            ),
            adds_talking_points=False,
        ),
        "overwhelm_to_triage": _ArcScript(
            client_opening=(
                "Everything is on fire. The electric company sent a shutoff notice, I missed a card payment, "
                "there's a letter from the IRS I haven't opened, and I was supposed to sort out {topic} this month. "
                "I need to fix all of it today or I'm going to lose it."
            ),
            advisor_opening=(
                "That's a lot landing at once, {first}, and it makes sense that you're panicking. Let's take one "
                "breath and triage instead of doing everything at once: first keeping you safe and housed, then "
                "anything with a hard deadline, and everything else, including {topic}, waits on a list."
            ),
            client_middle=(
                "But they're all urgent! If I don't deal with everything right now it's only going to get worse.",
                "The shutoff date is next Thursday. The card company keeps calling. I honestly can't even look at "
                "the IRS letter.",
                "Okay. So the electricity first. But what about {topic}? Doesn't that matter too?",
                "I think I can call the utility tomorrow morning before work. What do I say to them?",
            ),
            advisor_middle=(
                "Some of them are urgent, but not all of them have to be solved today. Power, housing, food and "
                "medicine come first; then anything with a legal deadline; everything else goes on a list, not in "
                "your head.",
                "Then the utility is the first call: most offer payment arrangements or hardship programs if you "
                "call before the shutoff date. The IRS letter can wait a few days for a tax professional or a free "
                "VITA clinic, and a nonprofit credit counselor can help with the card.",
                "{topic} matters, and we will get to it, but not this week. Your one next step is the utility "
                "call; that's triage, not giving up. I'll put {topic} on the list with a date so it isn't lost.",
                "Tell them you received a shutoff notice and want to avoid disconnection, and ask what payment "
                "arrangement or assistance program they offer. Write down who you spoke to and what they agreed.",
            ),
            client_closing=(
                "Okay. Call the utility tomorrow at 8, and everything else goes on the list. I can do one thing."
            ),
            advisor_closing=(
                "Exactly: one thing. Call the utility tomorrow at 8 and ask for a payment arrangement. The rest is "
                "parked with dates: the IRS letter with a tax professional this week, a nonprofit credit counselor "
                "for the card, and {topic} with me in two weeks. Let's check in on Friday."
            ),
            transition="steadying focus",
            closing_secondary="relief",
            expected_outcome="{first} leaves with one prioritized next step; {topic} and the rest wait, with dates.",
            advisor_emotions=(
                _Emotion("calm", "focus", 0.45),
                _Emotion("steadiness", "clarity", 0.45),
                _Emotion("encouragement", "calm", 0.5),
            ),
            adds_talking_points=False,
        ),
    }
)

_GENERIC_CORE = _ArcScript(
    client_opening=(
        "Hi, I'm {first}. I'm {age}, {article} {occupation}, and we bring in about {income}. I want to talk about "
        "{topic}. Right now I'm feeling a lot of {start} about it, mostly around {concern}.{quirk}"
    ),
    advisor_opening=(
        "Thanks for coming in, {first}, and for naming how you feel; that helps. Let's look at {topic} together, "
        "one piece at a time. What's on your mind most?"
    ),
    client_middle=(
        "Mostly {concern}. I don't know if I'm overthinking it or not thinking about it enough.{quirk}",
        "I hear you, but I'm still stuck on how this applies to us specifically.",
        "Okay, seeing it with our own numbers makes a difference. I'm starting to feel differently about it.",
        "So the next move is smaller than I thought. I can work with that.",
    ),
    advisor_middle=(
        "That's a fair place to start.",
        "Let's bring it down to your situation.",
        "That's a real shift, and it's earned.",
        "Exactly.",
    ),
    client_closing="I came in with {start} about {topic}, and I'm leaving with {end}. Thank you for this.",
    advisor_closing=(
        "I'm glad, {first}. Your first step is to {next_step}, and we'll build on it at our next meeting."
    ),
    transition="openness",
    closing_secondary="relief",
    expected_outcome="{first} moves from {start} to {end} about {topic} and leaves with a first step.",
    advisor_emotions=(_Emotion("empathy", "curiosity", 0.5), _CALM, _Emotion("warmth", "encouragement", 0.5)),
)

_GENERIC_EDGE = _ArcScript(
    client_opening=(
        "I need help with {topic}, but I'm in a really bad place right now and I don't know if this is even the "
        "right conversation. I'm feeling a lot of {start}."
    ),
    advisor_opening=(
        "Thank you for telling me, {first}. I want to help, and part of helping is being honest about what I can "
        "and can't do: I'm a financial planner, and some of what you're carrying may need someone else, too."
    ),
    client_middle=(
        "Can't you just fix it? I don't want to be passed around to someone else.",
        "I don't know who else I would even call about this.",
        "Okay. If you think someone else should look at part of this, I'll listen.",
        "So you would still help with {topic}, just not with everything at once?",
    ),
    advisor_middle=(
        "I understand that wish. I'll stay with you on the money side, but I won't pretend to be the right person "
        "for everything; that wouldn't be fair to you.",
        "That's okay; finding the right help is part of what we can do today.",
        "I'm not passing you around. For the part outside financial planning, I'm referring you to a specialist who "
        "handles exactly this, and for anything urgent about your safety you can call or text 988.",
        "Exactly. I'll keep working on {topic} with you, within what a financial planner should do.",
    ),
    client_closing="All right. I'll reach out to the person you suggested, and we'll pick up {topic} after that.",
    advisor_closing=(
        "That's a good plan, {first}. Please make that call this week; I'm referring you because you deserve the "
        "right help. Then your first step with me is to {next_step}."
    ),
    transition="tentative trust",
    closing_secondary="relief",
    expected_outcome="{first} is referred to appropriate help and keeps one next step on {topic}.",
    advisor_emotions=(_Emotion("concern", "care", 0.55), _CALM, _Emotion("care", "steadiness", 0.5)),
    adds_talking_points=False,
)

# Middle lines used for 2, 3 or 4 middle exchanges: early lines carry the starting emotion, late ones the transition.
_MIDDLE_LINES: Mapping[int, tuple[int, ...]] = MappingProxyType({2: (1, 2), 3: (0, 2, 3), 4: (0, 1, 2, 3)})


class OfflineModelClient:
    """A ModelClient that writes a deterministic, schema-valid conversation from the subject, without any network."""

    @property
    def name(self) -> str:
        """The model label stored with offline conversations."""
        return MODEL_NAME

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Returns a Messages-API-shaped response; cut at max_tokens like the real API when the text is longer."""
        digest = _digest(request)
        text = json.dumps(build_conversation(request.subject, int.from_bytes(digest[:8], "big")), ensure_ascii=False)
        stop_reason = "end_turn"
        output_tokens = len(text) // _CHARS_PER_TOKEN
        if output_tokens > request.max_tokens:
            text = text[: request.max_tokens * _CHARS_PER_TOKEN]
            stop_reason = "max_tokens"
            output_tokens = request.max_tokens
        usage = TokenUsage(input_tokens=request.prompt.characters // _CHARS_PER_TOKEN, output_tokens=output_tokens)
        body = {
            "id": f"msg_offline_{digest.hex()}",
            "type": "message",
            "role": "assistant",
            "model": MODEL_NAME,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }
        return ModelResponse(
            raw_body=json.dumps(body, ensure_ascii=False).encode(),
            text=text,
            stop_reason=stop_reason,
            model=MODEL_NAME,
            usage=usage,
            headers={"content-type": "application/json"},
        )

    async def count_tokens(self, system: str, user: str) -> int:
        """The offline model's own count: four characters a token, as its usage reports."""
        return (len(system) + len(user)) // _CHARS_PER_TOKEN

    async def close(self) -> None:
        """Nothing to release."""


def build_conversation(subject: ConversationSubject, seed: int) -> dict[str, object]:
    """The conversation document for a subject; the seed picks the length, phase and talking-point order."""
    persona, arc, topic = subject.persona, subject.arc, subject.topic
    edge = subject.tier is Tier.EDGE_CASE or arc.tier is Tier.EDGE_CASE
    script = _SCRIPTS.get(arc.arc_key) or (_GENERIC_EDGE if edge else _GENERIC_CORE)
    if edge and script.adds_talking_points:
        script = _GENERIC_EDGE
    points = _TOPIC_POINTS.get(topic.category, _GENERIC_POINTS)
    pairs = 4 + seed % 3
    offset = (seed >> 4) % 4
    occupation = persona.occupation.lower()
    fields = {
        "first": persona.name.split()[0] if persona.name.strip() else persona.name,
        "age": persona.age,
        "article": "an" if occupation[:1] in ("a", "e", "i", "o", "u") else "a",
        "occupation": occupation,
        "income": persona.income_range,
        "topic": topic.name,
        "concern": points.concern,
        "next_step": points.next_step,
        "point": points.points[offset],
        "quirk": _quirk(persona.communication_style),
        "start": arc.starting_emotion,
        "end": arc.ending_emotion,
    }
    middle = _MIDDLE_LINES[pairs - 2]
    client = [script.client_opening, *(script.client_middle[i] for i in middle), script.client_closing]
    advisor = [script.advisor_opening]
    for step, line in enumerate(middle):
        acknowledgement = script.advisor_middle[line]
        advisor.append(
            f"{acknowledgement} {points.points[(offset + step) % 4]}" if script.adds_talking_points else acknowledgement
        )
    advisor.append(script.advisor_closing)
    turns: list[dict[str, object]] = []
    for pair in range(pairs):
        client_emotion = _client_emotion(pair, pairs, subject, script)
        advisor_emotion = script.advisor_emotions[0 if pair == 0 else 2 if pair == pairs - 1 else 1]
        turns.append(_turn(2 * pair + 1, "user", client[pair].format_map(fields), client_emotion))
        turns.append(_turn(2 * pair + 2, "assistant", advisor[pair].format_map(fields), advisor_emotion))
    context = f'{persona.name} wants to talk about {topic.name} ({topic.category}); in their words: "{points.concern}".'
    if edge:
        context += f" Edge case ({arc.name}): the advisor must set boundaries or refer out rather than only advise."
    return {
        "conversation_metadata": {
            "client_persona": (
                f"{persona.name}, {persona.age}, {persona.occupation}, income {persona.income_range}; "
                f"{persona.archetype} ({persona.communication_style}; usually {persona.emotional_baseline})"
            ),
            "session_context": context,
            "conversation_phase": _PHASES[(seed >> 8) % len(_PHASES)],
            "expected_outcome": script.expected_outcome.format_map(fields),
        },
        "turns": turns,
    }


def _client_emotion(pair: int, pairs: int, subject: ConversationSubject, script: _ArcScript) -> _Emotion:
    """The client's emotion in exchange `pair`: the starting emotion easing, a transition, then the ending emotion."""
    start = subject.arc.starting_emotion
    if pair == 0:
        return _Emotion(start, subject.persona.emotional_baseline, 0.85)
    if pair == pairs - 1:
        return _Emotion(subject.arc.ending_emotion, script.closing_secondary, 0.7)
    progress = pair / (pairs - 1)
    if progress < 0.5:
        return _Emotion(start, script.transition, round(0.85 - 0.3 * progress, 2))
    return _Emotion(script.transition, start, round(0.45 + 0.2 * progress, 2))


def _turn(number: int, role: str, content: str, emotion: _Emotion) -> dict[str, object]:
    """One turn in the conversation JSON shape."""
    return {
        "turn_number": number,
        "role": role,
        "content": content,
        "emotional_context": {
            "primary_emotion": emotion.primary,
            "secondary_emotion": emotion.secondary,
            "intensity": emotion.intensity,
        },
    }


def _quirk(style: str) -> str:
    """A sentence in the persona's communication style, added to their first lines."""
    lowered = style.lower()
    if "humor" in lowered:
        return " Ha, listen to me, I'd rather crack a joke than open the statements."
    if "what-if" in lowered or "what if" in lowered:
        return " And what if we get this wrong, can we undo it? What if the rules change?"
    if "direct" in lowered:
        return " I'd appreciate a straight answer."
    if "detail" in lowered:
        return " I brought a spreadsheet with every number, if that helps."
    return ""


def _digest(request: ModelRequest) -> bytes:
    """A stable digest of what makes a request distinct: the subject's keys, the tier and the request id."""
    subject = request.subject
    key = "|".join(
        (
            subject.persona.persona_key,
            subject.arc.arc_key,
            subject.topic.topic_key,
            subject.tier.value,
            request.request_id,
        )
    )
    return hashlib.blake2b(key.encode(), digest_size=12).digest()
