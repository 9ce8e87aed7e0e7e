"""Every string a person sees (customers and agents), in one place per language.

Texts are HTML for Telegram's ``parse_mode=HTML``; ``{placeholders}`` are filled with values that
the caller has already escaped. A language without a table falls back to English. Customers get
the table of their language; agents the table of theirs, and the hand-over card is English.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from html import escape as _html_escape
from pathlib import Path
from typing import Any

from kb.language import base_language


@dataclass(frozen=True, slots=True)
class Texts:
    start: str
    help: str
    source: str
    helped: str
    not_helped: str
    did_you_mean: str
    no_answer: str
    empty_question: str
    not_text: str
    thanks_feedback: str
    sorry_feedback: str
    feedback_already: str
    feedback_unknown: str
    article_gone: str
    human_requested: str
    human_already: str
    error: str
    button_helped: str
    button_not_helped: str
    button_human: str
    command_start: str
    command_help: str
    command_human: str
    # -- the hand-over, as the customer sees it --------------------------------------------
    no_answer_alone: str
    offer_human: str
    offer_after_feedback: str
    button_connect: str
    queue_next: str
    queue_position: str
    after_hours: str
    when_today: str
    when_tomorrow: str
    when_day: str
    weekdays: tuple[str, ...]
    in_minutes: str
    in_hours: str
    in_days: str
    cancel_hint: str
    human_unavailable: str
    with_agent_help: str
    with_agent_toast: str
    cancelled: str
    nothing_to_cancel: str
    ticket_resolved: str
    ticket_reopened: str
    csat_thanks: str
    csat_unknown: str
    csat_already: str
    command_cancel: str
    # -- privacy: /mydata and /forget ------------------------------------------------------
    mydata_caption: str
    mydata_none: str
    forget_confirm: str
    button_forget_yes: str
    button_forget_no: str
    forget_done: str
    forget_kept: str
    forget_nothing: str
    command_mydata: str
    command_forget: str
    # -- the agents' forum ------------------------------------------------------------------
    card_title: str
    card_customer: str
    card_first_seen: str
    card_earlier: str
    card_earlier_none: str
    card_reason: str
    card_question: str
    card_tried: str
    card_tried_none: str
    card_conversation: str
    card_conversation_part: str
    card_conversation_file: str
    card_owner: str
    card_owner_none: str
    card_csat: str
    card_no_username: str
    card_no_language: str
    outcomes: dict[str, str]
    line_answer: str
    line_suggest: str
    line_no_answer: str
    line_content: str
    transcript_head: str
    transcript_turn: str
    transcript_helped: str
    transcript_not_helped: str
    state_waiting: str
    state_assigned: str
    state_resolved: str
    state_bot: str
    reasons: dict[str, str]
    attempt_answer: str
    attempt_picked: str
    attempt_suggest: str
    attempt_escalate: str
    helpful_yes: str
    helpful_no: str
    helpful_none: str
    who_customer: str
    who_bot: str
    who_agent: str
    who_note: str
    transcript_caption: str
    button_claim: str
    button_close: str
    button_send: str
    agent_claimed: str
    agent_took_over: str
    claim_done: str
    claim_already: str
    ticket_ended: str
    agent_closed: str
    close_already: str
    agent_reopened: str
    reopen_already: str
    reopen_busy: str
    agent_cancelled: str
    agent_rated: str
    first_reply_claimed: str
    note_saved: str
    note_usage: str
    topic_closed: str
    general_hint: str
    stranger_refused: str
    stranger_toast: str
    wrong_topic: str
    customer_blocked: str
    not_delivered: str
    customer_deleted: str
    customer_edited: str
    relay_lost: str
    suggest_header: str
    suggest_item: str
    suggest_none: str
    no_question: str
    kb_sent: str
    kb_sent_toast: str
    kb_gone: str
    faq_saved: str
    faq_nothing: str
    agents_help: str
    command_close: str
    command_reopen: str
    command_note: str
    command_suggest: str
    command_faq: str
    # -- customer knowledge for agents: /profile, /tag, /stats ---------------------------------
    card_tags: str
    profile_head: str
    profile_seen: str
    profile_counts: str
    profile_csat: str
    profile_csat_none: str
    profile_tags: str
    profile_tags_none: str
    profile_articles: str
    profile_tickets: str
    profile_ticket: str
    profile_notes: str
    profile_gone: str
    tag_usage: str
    tag_done: str
    tag_none: str
    stats_head: str
    stats_period: str
    stats_empty: str
    customer_erased: str
    card_erased: str
    topic_erased: str
    command_profile: str
    command_tag: str
    command_stats: str
    # -- security: refused buttons, flood control ---------------------------------------------
    button_refused: str
    flood_notice: str
    flood_toast: str
    stranger_command: str


EN = Texts(
    start=(
        "Hi, {name}! I'm the help desk bot.\n\n"
        "Ask me a question in your own words and I'll answer from our help articles, "
        "right away, day or night. If I can't help, I'll pass you to a person.\n\n"
        "Try: <i>{example}</i>"
    ),
    help=(
        "<b>How this works</b>\n"
        "• Type a question in your own words: I search our help articles and answer.\n"
        "• Tell me whether an answer helped with the buttons under it.\n"
        "• If I'm not sure, I'll suggest the closest articles.\n"
        "• /human asks for a person; /cancel hands you back to me.\n"
        "• /mydata sends you everything we store about you; /forget erases it.\n"
        "• /start shows the welcome again."
    ),
    source="Source: {title}",
    helped="Helped",
    not_helped="Didn't help",
    did_you_mean="I'm not sure I understood. Did you mean one of these?",
    no_answer=(
        "I don't have an answer to that yet. I've noted your question so our team can add one.\n"
        "Would you like to ask a person?"
    ),
    empty_question="Please type your question in words, and I'll look for an answer.",
    not_text="I can only read text for now. Please type your question, and I'll look for an answer.",
    thanks_feedback="Thanks for the feedback!",
    sorry_feedback="Sorry that didn't help. You can rephrase the question, or ask a person.",
    feedback_already="Already noted, thank you.",
    feedback_unknown="That answer is no longer available.",
    article_gone="Sorry, that article is no longer available. Please ask your question again.",
    human_requested=(
        "Got it: I've asked a person from our team to take over (request #{ticket}). "
        "They will reply here, in this chat, and they can see our conversation so far, "
        "so you won't need to repeat anything."
    ),
    human_already="Your request #{ticket} is already with our team. They will reply here, in this chat.",
    error="Sorry, something went wrong on our side. Please try again in a moment.",
    button_helped="👍 Helped",
    button_not_helped="👎 Didn't help",
    button_human="🙋 Ask a person",
    command_start="Welcome and what I can do",
    command_help="How to use this bot",
    command_human="Ask a person",
    no_answer_alone=(
        "I don't have an answer to that yet. I've noted your question so our team can add one.\n"
        "Could you try asking in other words?"
    ),
    offer_human=(
        "I'm sorry, I couldn't answer that either. Shall I pass you to a person from our team? "
        "They'll see our conversation, so you won't need to repeat yourself."
    ),
    offer_after_feedback=(
        "Sorry I haven't been able to help so far. Shall I pass you to a person from our team? "
        "They'll see our conversation, so you won't need to repeat yourself."
    ),
    button_connect="🙋 Yes, connect me to a person",
    queue_next="You're next in the queue.",
    queue_position="Your place in the queue: {position}.",
    after_hours=(
        "Our team is away right now. They're back {when} ({zone} time), {delta}; "
        "your request will be waiting for them."
    ),
    when_today="today at {time}",
    when_tomorrow="tomorrow at {time}",
    when_day="on {day} at {time}",
    weekdays=("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    in_minutes="in about {n} minutes",
    in_hours="in about {n} hours",
    in_days="in about {n} days",
    cancel_hint="Send /cancel if you'd rather carry on with me.",
    human_unavailable=(
        "Sorry, there's no one from our team I can pass you to in this chat. "
        "Please try asking in other words, and I'll look again."
    ),
    with_agent_help=(
        "You're talking to our team about request #{ticket}: everything you send here goes to them, "
        "and they'll reply in this chat.\n/cancel hands you back to me, the bot."
    ),
    with_agent_toast="You're talking to a person now: they'll reply in this chat.",
    cancelled="OK, I've cancelled request #{ticket}. I'm back: ask me anything.",
    nothing_to_cancel=(
        "There's no open request to cancel: you're talking to me, the bot. "
        "Ask me anything, or send /human for a person."
    ),
    ticket_resolved=(
        "Our team has marked request #{ticket} as resolved. How did we do? "
        "Please rate the help you got, from 1 (poor) to 5 (excellent).\n\n"
        "If you need anything else, just ask: I'm back to answer your questions."
    ),
    ticket_reopened="Our team has reopened request #{ticket}. They'll reply here, in this chat.",
    csat_thanks="Thank you! You rated our help {score}/5.",
    csat_unknown="That rating is no longer available.",
    csat_already="Already noted, thank you.",
    command_cancel="Hand the conversation back to the bot",
    mydata_caption=(
        "Everything we store about you, as of {when}: your profile, our conversations, your feedback, "
        "your requests and ratings, and the FAQ suggestions that quote you. /forget erases it."
    ),
    mydata_none="We don't store anything about you.",
    forget_confirm=(
        "This erases everything we store about you: your profile, our conversations, your feedback, "
        "your requests and ratings, and anything our help articles took from your words. "
        "An open request is closed. This can't be undone.\n\nErase it all?"
    ),
    button_forget_yes="🗑 Yes, erase everything",
    button_forget_no="Keep my data",
    forget_done=(
        "Done: everything we stored about you is erased. If you write to me again, I'll start afresh."
    ),
    forget_kept="OK, nothing was erased.",
    forget_nothing="There's nothing stored about you (any more).",
    command_mydata="Get everything we store about you",
    command_forget="Erase everything we store about you",
    card_title="🎫 <b>Ticket #{ticket}</b> · {state}",
    card_customer="<b>Customer:</b> {name} · {username} · id <code>{id}</code> · language {language}",
    card_first_seen="<b>First seen:</b> {when}",
    card_earlier="<b>Earlier tickets:</b> {tickets}",
    card_earlier_none="none",
    card_reason="<b>Reason:</b> {reason}",
    card_question="<b>Question:</b> {question}",
    card_tried="<b>What the bot tried</b>",
    card_tried_none="nothing: the customer asked for a person straight away",
    card_conversation="<b>Conversation so far</b> ({count} messages)",
    card_conversation_part="<b>Conversation so far</b> (the last {shown} of {count} messages)",
    card_conversation_file="the whole conversation is in the file below",
    card_owner="<b>Assigned to:</b> {agent}",
    card_owner_none="<b>Assigned to:</b> nobody yet: press Claim",
    card_csat="<b>Rating:</b> {score}/5",
    card_no_username="no username",
    card_no_language="unknown",
    outcomes={"resolved": "resolved", "cancelled": "cancelled", "waiting": "open", "assigned": "open"},
    line_answer="[answer: “{title}” v{version}]",
    line_suggest="[did you mean…]",
    line_no_answer="[no answer]",
    line_content="[{kind}]",
    transcript_head="Ticket #{ticket}: {name}{username}, Telegram id {id}\nOpened {when}; reason: {reason}",
    transcript_turn=" ({decision}, score {score}{feedback})",
    transcript_helped=", helped",
    transcript_not_helped=", didn't help",
    state_waiting="waiting for an agent",
    state_assigned="with {agent}",
    state_resolved="resolved",
    state_bot="cancelled by the customer",
    reasons={
        "command": "the customer asked for a person (/human)",
        "no_answer": "the bot had no answer; the customer asked for a person",
        "not_helpful": "an answer didn't help; the customer asked for a person",
        "no_match": "none of the suggested articles fitted; the customer asked for a person",
        "unanswered": (
            "several questions in a row without a useful answer; the bot offered a person "
            "and the customer accepted"
        ),
    },
    attempt_answer="answered with “{title}” v{version} · score {score} · {helpful}",
    attempt_picked="suggested articles, picked “{title}” v{version} · best score {score} · {helpful}",
    attempt_suggest="suggested articles · best score {score} · none picked",
    attempt_escalate="had no answer · best score {score}",
    helpful_yes="👍 helped",
    helpful_no="👎 didn't help",
    helpful_none="no feedback",
    who_customer="Customer",
    who_bot="Bot",
    who_agent="Agent",
    who_note="Note",
    transcript_caption="The whole conversation of ticket #{ticket}: {count} messages.",
    button_claim="🙋 Claim",
    button_close="✅ Close",
    button_send="📨 Send {n}",
    agent_claimed="🙋 {agent} took this ticket.",
    agent_took_over="🙋 {agent} took this ticket over from {previous}.",
    claim_done="It's yours.",
    claim_already="It's already yours.",
    ticket_ended="This ticket is closed.",
    agent_closed="✅ Ticket #{ticket} resolved by {agent}. The customer was asked to rate the help.",
    close_already="This ticket is already closed.",
    agent_reopened="🔄 Ticket #{ticket} reopened by {agent}; the customer was told.",
    reopen_already="This ticket is open.",
    reopen_busy="The customer has another open request, #{other}: carry on there.",
    agent_cancelled="↩️ The customer cancelled the request and is back with the bot.",
    agent_rated="⭐ The customer rated this ticket {score}/5.",
    first_reply_claimed="🙋 {agent} answered first and now has this ticket.",
    note_saved="📝 Note saved on the ticket and the customer's profile; the customer doesn't see it.",
    note_usage="Usage: /note TEXT, or start a message with // to keep it internal.",
    topic_closed=(
        "This ticket is closed, so your message did not reach the customer (it stays here). "
        "Send /reopen to reopen the ticket, then send it again."
    ),
    general_hint=(
        "Messages in General reach no customer: reply inside the ticket's topic. "
        "/close, /reopen, /note, /suggest and /faq work there too."
    ),
    stranger_refused="Only agents can talk to customers here: your message was not sent.",
    stranger_toast="Only agents can do this.",
    wrong_topic="This button doesn't belong to this topic.",
    customer_blocked="⚠️ The customer has blocked the bot: your message was not delivered.",
    not_delivered="⚠️ Not delivered to the customer: {reason}",
    customer_deleted="🗑 The customer deleted a message before it reached this topic.",
    customer_edited="✏️ The customer edited a message:",
    relay_lost="⚠️ A message from the customer could not be copied here: {reason}",
    suggest_header="Best KB answers for “{question}”:",
    suggest_item="{n}. <b>{title}</b> · v{version} · score {score}\n{preview}",
    suggest_none="No KB article comes close to “{question}”.",
    no_question="The customer hasn't asked anything in words yet.",
    kb_sent="📨 {agent} sent “{title}” (v{version}) to the customer.",
    kb_sent_toast="Sent.",
    kb_gone="That article is no longer available.",
    faq_saved="💡 Saved as FAQ suggestion #{id} for the editors.\n<b>Q:</b> {question}\n<b>A:</b> {answer}",
    faq_nothing=(
        "Nothing to save yet: /faq needs a question from the customer and an answer from you "
        "(or give the answer: /faq ANSWER)."
    ),
    agents_help=(
        "<b>In a ticket's topic</b>\n"
        "• Anything you write goes to the customer (edits too), except commands and notes.\n"
        "• /note TEXT stays internal and lands on the customer's profile; a message starting with "
        "// stays in the ticket only.\n"
        "• /profile shows the customer's profile and history; /tag TAG... (or /tag -TAG) tags them.\n"
        "• /suggest shows the best KB answers for the customer's last question, to send with a press.\n"
        "• /faq saves the customer's question and your last answer as an FAQ suggestion.\n"
        "• /close resolves the ticket (the customer rates it); /reopen brings it back.\n"
        "• The card's Claim button assigns the ticket to you.\n"
        "• /stats (anywhere in this chat): the service figures of the last 7 and 30 days."
    ),
    command_close="Resolve the ticket; the customer rates the help",
    command_reopen="Reopen a resolved ticket",
    command_note="Internal note, not sent to the customer",
    command_suggest="Best KB answers for the customer's last question",
    command_faq="Save the question and your answer as an FAQ suggestion",
    card_tags="<b>Tags:</b> {tags}",
    profile_head="👤 <b>{name}</b> · {username} · id <code>{id}</code> · language {language}",
    profile_seen="First seen {first}; last seen {last}",
    profile_counts=(
        "{conversations} conversation(s), {questions} message(s) to the bot, {answers} answer(s) "
        "({helped} helped, {not_helped} didn't help); {tickets} ticket(s)"
    ),
    profile_csat="<b>CSAT:</b> {average} from {n} rating(s)",
    profile_csat_none="<b>CSAT:</b> no ratings yet",
    profile_tags="<b>Tags:</b> {tags}",
    profile_tags_none="<b>Tags:</b> none (add some with /tag)",
    profile_articles="<b>Articles shown:</b> {articles}",
    profile_tickets="<b>Tickets</b>",
    profile_ticket="• #{id} {opened} {state}{csat}: {question}",
    profile_notes="<b>Notes</b>\n{notes}",
    profile_gone="The customer's profile is gone (erased at their request).",
    tag_usage="Usage: /tag TAG... adds tags to the customer's profile; /tag -TAG removes one.",
    tag_done="🏷 Tags on the customer's profile: {tags}",
    tag_none="none",
    stats_head="📊 <b>Service figures</b>",
    stats_period=(
        "<b>Last {days} days</b>: {conversations} conversations, {tickets} tickets\n"
        "self-service {self_service} · escalation {escalation} · answer feedback {feedback}\n"
        "first response: median {first_median}, p90 {first_p90}\n"
        "resolution: median {resolution_median}, p90 {resolution_p90}\n"
        "CSAT: {csat} from {csat_n} rating(s)"
    ),
    stats_empty="No conversations in the last {days} days yet.",
    customer_erased=(
        "🗑 The customer asked us to erase their data: ticket #{ticket} is closed and everything the "
        "bot stored about them is deleted. Their messages in this topic stay in Telegram: delete the "
        "topic if they must go too."
    ),
    card_erased="🎫 <b>Ticket #{ticket}</b> · the customer's data was erased at their request",
    topic_erased="#{ticket} (erased)",
    command_profile="The customer's profile and history",
    command_tag="Tag the customer's profile: /tag TAG... or /tag -TAG",
    command_stats="Service figures of the last 7 and 30 days",
    button_refused="This button doesn't work here (any more).",
    flood_notice=(
        "You're sending messages faster than I can read them, so I'm pausing for a moment and "
        "won't answer these. Please wait a few seconds, then send your question again as one message."
    ),
    flood_toast="Too many presses at once: please wait a few seconds.",
    stranger_command="Only agents can use the help desk's commands here.",
)

# -- other languages: the customer's most frequent texts; the rest stays English -------------------

CS = replace(
    EN,
    start=(
        "Dobrý den, {name}! Jsem robot zákaznické podpory.\n\n"
        "Zeptejte se vlastními slovy a odpovím z našich článků nápovědy, hned, ve dne i v noci. "
        "Když si nebudu vědět rady, předám vás kolegovi.\n\nZkuste: <i>{example}</i>"
    ),
    source="Zdroj: {title}",
    did_you_mean="Nejsem si jistý, že rozumím. Myslel(a) jste jedno z tohoto?",
    no_answer=(
        "Na tohle zatím odpověď nemám. Vaši otázku jsem si poznamenal, aby ji tým mohl doplnit.\n"
        "Chcete se zeptat člověka?"
    ),
    no_answer_alone="Na tohle zatím odpověď nemám. Zkusíte se zeptat jinými slovy?",
    empty_question="Napište prosím otázku slovy a já vyhledám odpověď.",
    not_text="Zatím umím číst jen text. Napište prosím svou otázku.",
    thanks_feedback="Děkujeme za zpětnou vazbu!",
    sorry_feedback="Mrzí mě, že to nepomohlo. Zkuste otázku položit jinak, nebo se zeptejte člověka.",
    error="Omlouváme se, u nás se něco pokazilo. Zkuste to prosím za chvíli znovu.",
    button_helped="👍 Pomohlo",
    button_not_helped="👎 Nepomohlo",
    button_human="🙋 Zeptat se člověka",
    button_connect="🙋 Ano, spojte mě s člověkem",
    button_refused="Toto tlačítko tu (už) nefunguje.",
    flood_notice=(
        "Posíláte zprávy rychleji, než je stihnu číst, takže na chvíli přestávám a na tyto neodpovím. "
        "Počkejte prosím pár sekund a pošlete otázku znovu jako jednu zprávu."
    ),
    flood_toast="Příliš mnoho stisknutí najednou: počkejte prosím pár sekund.",
)

DE = replace(
    EN,
    start=(
        "Hallo {name}! Ich bin der Support-Bot.\n\n"
        "Stellen Sie Ihre Frage in eigenen Worten, und ich antworte sofort aus unseren Hilfeartikeln, "
        "Tag und Nacht. Wenn ich nicht weiterweiß, verbinde ich Sie mit einem Menschen.\n\n"
        "Zum Beispiel: <i>{example}</i>"
    ),
    source="Quelle: {title}",
    did_you_mean="Ich bin nicht sicher, ob ich Sie verstanden habe. Meinten Sie eines davon?",
    no_answer=(
        "Darauf habe ich noch keine Antwort. Ich habe Ihre Frage notiert, damit unser Team sie ergänzt.\n"
        "Möchten Sie einen Menschen fragen?"
    ),
    no_answer_alone="Darauf habe ich noch keine Antwort. Können Sie es mit anderen Worten versuchen?",
    empty_question="Bitte schreiben Sie Ihre Frage in Worten, dann suche ich eine Antwort.",
    not_text="Ich kann bisher nur Text lesen. Bitte schreiben Sie Ihre Frage.",
    thanks_feedback="Danke für Ihr Feedback!",
    sorry_feedback=(
        "Schade, dass das nicht geholfen hat. "
        "Formulieren Sie die Frage anders oder fragen Sie einen Menschen."
    ),
    error="Entschuldigung, bei uns ist etwas schiefgelaufen. Bitte versuchen Sie es gleich noch einmal.",
    button_helped="👍 Hat geholfen",
    button_not_helped="👎 Hat nicht geholfen",
    button_human="🙋 Einen Menschen fragen",
    button_connect="🙋 Ja, mit einem Menschen verbinden",
    button_refused="Diese Schaltfläche funktioniert hier (nicht mehr).",
    flood_notice=(
        "Sie schicken Nachrichten schneller, als ich sie lesen kann. Ich mache kurz Pause und beantworte "
        "diese nicht. Bitte warten Sie ein paar Sekunden und stellen Sie Ihre Frage dann in einer Nachricht."
    ),
    flood_toast="Zu viele Klicks auf einmal: Bitte warten Sie ein paar Sekunden.",
)

ES = replace(
    EN,
    start=(
        "¡Hola, {name}! Soy el bot de atención al cliente.\n\n"
        "Pregúntame con tus propias palabras y te responderé al instante con nuestros artículos de "
        "ayuda, de día o de noche. Si no puedo ayudarte, te pasaré con una persona.\n\n"
        "Prueba: <i>{example}</i>"
    ),
    source="Fuente: {title}",
    did_you_mean="No estoy seguro de haberte entendido. ¿Te refieres a alguno de estos?",
    no_answer=(
        "Todavía no tengo respuesta para eso. He anotado tu pregunta para que el equipo la añada.\n"
        "¿Quieres preguntar a una persona?"
    ),
    no_answer_alone="Todavía no tengo respuesta para eso. ¿Puedes preguntarlo con otras palabras?",
    empty_question="Escribe tu pregunta con palabras y buscaré una respuesta.",
    not_text="De momento solo puedo leer texto. Escribe tu pregunta, por favor.",
    thanks_feedback="¡Gracias por tu opinión!",
    sorry_feedback="Siento que no te haya ayudado. Prueba a reformular la pregunta o pregunta a una persona.",
    error="Lo sentimos, algo ha fallado por nuestra parte. Inténtalo de nuevo en un momento.",
    button_helped="👍 Me ayudó",
    button_not_helped="👎 No me ayudó",
    button_human="🙋 Preguntar a una persona",
    button_connect="🙋 Sí, pásame con una persona",
    button_refused="Este botón ya no funciona aquí.",
    flood_notice=(
        "Está enviando mensajes más rápido de lo que puedo leerlos, así que hago una pausa y no responderé "
        "a estos. Espere unos segundos y envíe su pregunta de nuevo en un solo mensaje."
    ),
    flood_toast="Demasiadas pulsaciones a la vez: espere unos segundos.",
)

RU = replace(
    EN,
    start=(
        "Здравствуйте, {name}! Я бот службы поддержки.\n\n"
        "Задайте вопрос своими словами, и я сразу отвечу по нашим справочным статьям, днём и ночью. "
        "Если не смогу помочь, передам вас сотруднику.\n\nНапример: <i>{example}</i>"
    ),
    source="Источник: {title}",
    did_you_mean="Не уверен, что правильно вас понял. Вы имели в виду одно из этого?",
    no_answer=(
        "У меня пока нет ответа на этот вопрос. Я записал его, чтобы команда добавила ответ.\n"
        "Хотите спросить сотрудника?"
    ),
    no_answer_alone="У меня пока нет ответа на этот вопрос. Попробуете спросить другими словами?",
    empty_question="Пожалуйста, напишите вопрос словами, и я поищу ответ.",
    not_text="Пока я умею читать только текст. Пожалуйста, напишите свой вопрос.",
    thanks_feedback="Спасибо за отзыв!",
    sorry_feedback="Жаль, что это не помогло. Переформулируйте вопрос или спросите сотрудника.",
    error="Извините, у нас что-то пошло не так. Попробуйте ещё раз через минуту.",
    button_helped="👍 Помогло",
    button_not_helped="👎 Не помогло",
    button_human="🙋 Спросить сотрудника",
    button_connect="🙋 Да, соедините с сотрудником",
)

ZH = replace(
    EN,
    start=(
        "{name}，您好！我是客服机器人。\n\n"
        "请用自己的话提问，我会立即根据我们的帮助文章回答，全天候在线。"
        "如果我帮不上忙，会为您转接人工客服。\n\n试试：<i>{example}</i>"
    ),
    source="来源：{title}",
    did_you_mean="我不太确定是否理解了您的意思。您是想问以下哪一个？",
    no_answer="这个问题我暂时还没有答案。我已记下您的问题，团队会补充答案。\n需要转接人工客服吗？",
    no_answer_alone="这个问题我暂时还没有答案。您能换个说法再问一次吗？",
    empty_question="请用文字输入您的问题，我来为您查找答案。",
    not_text="我目前只能读取文字。请输入您的问题。",
    thanks_feedback="感谢您的反馈！",
    sorry_feedback="很抱歉没能帮到您。您可以换个说法提问，或者咨询人工客服。",
    error="抱歉，我们这边出了点问题。请稍后再试。",
    button_helped="👍 有帮助",
    button_not_helped="👎 没有帮助",
    button_human="🙋 咨询人工客服",
    button_connect="🙋 是的，转接人工客服",
)

EL = replace(
    EN,
    start=(
        "Γεια σας, {name}! Είμαι το bot εξυπηρέτησης πελατών.\n\n"
        "Κάντε την ερώτησή σας με δικά σας λόγια και θα απαντήσω αμέσως από τα άρθρα βοήθειας, "
        "μέρα και νύχτα. Αν δεν μπορώ να βοηθήσω, θα σας συνδέσω με έναν άνθρωπο.\n\n"
        "Δοκιμάστε: <i>{example}</i>"
    ),
    source="Πηγή: {title}",
    did_you_mean="Δεν είμαι σίγουρος ότι κατάλαβα. Μήπως εννοείτε κάποιο από αυτά;",
    no_answer=(
        "Δεν έχω ακόμη απάντηση σε αυτό. Κατέγραψα την ερώτησή σας για να προστεθεί απάντηση.\n"
        "Θέλετε να ρωτήσετε έναν άνθρωπο;"
    ),
    no_answer_alone="Δεν έχω ακόμη απάντηση σε αυτό. Μπορείτε να το ρωτήσετε με άλλα λόγια;",
    empty_question="Γράψτε την ερώτησή σας με λέξεις και θα ψάξω για απάντηση.",
    not_text="Προς το παρόν διαβάζω μόνο κείμενο. Γράψτε την ερώτησή σας.",
    thanks_feedback="Ευχαριστούμε για τα σχόλιά σας!",
    sorry_feedback="Λυπάμαι που δεν βοήθησε. Διατυπώστε αλλιώς την ερώτηση ή ρωτήστε έναν άνθρωπο.",
    error="Συγγνώμη, κάτι πήγε στραβά σε εμάς. Δοκιμάστε ξανά σε λίγο.",
    button_helped="👍 Βοήθησε",
    button_not_helped="👎 Δεν βοήθησε",
    button_human="🙋 Ρωτήστε έναν άνθρωπο",
    button_connect="🙋 Ναι, συνδέστε με με έναν άνθρωπο",
)

FA = replace(
    EN,
    start=(
        "سلام {name}! من ربات پشتیبانی هستم.\n\n"
        "سؤالتان را با کلمات خودتان بپرسید تا فوراً از مقاله‌های راهنمای ما پاسخ بدهم، شبانه‌روز. "
        "اگر نتوانم کمک کنم، شما را به یک همکار انسانی وصل می‌کنم.\n\nامتحان کنید: <i>{example}</i>"
    ),
    source="منبع: {title}",
    did_you_mean="مطمئن نیستم منظورتان را فهمیده باشم. آیا منظورتان یکی از این‌هاست؟",
    no_answer=(
        "هنوز پاسخی برای این سؤال ندارم. سؤالتان را یادداشت کردم تا تیم پاسخ آن را اضافه کند.\n"
        "می‌خواهید از یک همکار انسانی بپرسید؟"
    ),
    no_answer_alone="هنوز پاسخی برای این سؤال ندارم. می‌توانید آن را با کلمات دیگری بپرسید؟",
    empty_question="لطفاً سؤالتان را با کلمات بنویسید تا پاسخ را پیدا کنم.",
    not_text="فعلاً فقط می‌توانم متن بخوانم. لطفاً سؤالتان را بنویسید.",
    thanks_feedback="از بازخورد شما متشکریم!",
    sorry_feedback="متأسفم که کمکی نکرد. سؤال را به شکل دیگری بپرسید یا از یک همکار انسانی کمک بگیرید.",
    error="متأسفیم، مشکلی در سمت ما پیش آمد. لطفاً کمی بعد دوباره امتحان کنید.",
    button_helped="👍 کمک کرد",
    button_not_helped="👎 کمک نکرد",
    button_human="🙋 پرسیدن از یک همکار انسانی",
    button_connect="🙋 بله، مرا به یک همکار وصل کنید",
)

_TABLES: dict[str, Texts] = {"en": EN, "cs": CS, "de": DE, "es": ES, "ru": RU, "zh": ZH, "el": EL, "fa": FA}


def texts_for(language: str | None) -> Texts:
    """The table for an IETF language tag such as ``en-GB``; English when there is none."""
    return _TABLES.get(base_language(language) or "", EN)


# -- editors (private chat with the bot) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EditorTexts:
    ingesting: str
    refused: str
    summary: str
    failed_file: str
    skipped_file: str
    merged: str
    near_duplicate: str
    contradiction: str
    more: str
    overview: str
    overview_article: str
    review: str
    review_from_ticket: str
    review_from_gaps: str
    button_approve: str
    button_edit: str
    button_reject: str
    review_approved: str
    review_rejected: str
    review_closed: str
    review_missing: str
    review_edit_prompt: str
    review_edit_toast: str
    review_edit_cancelled: str
    review_edit_text: str
    review_stranger: str
    verb_created: str
    verb_updated: str


EDITOR_EN = EditorTexts(
    ingesting="Ingesting <b>{name}</b>…",
    refused="I can't ingest this file: {reason}.",
    summary=(
        "<b>Ingest done</b>: added {added}, updated {updated}, unchanged {unchanged}, "
        "retired {retired}, failed {failed} file(s)."
    ),
    failed_file="❌ {where}: {reason}",
    skipped_file="⏭ {path}: {reason}",
    merged="♊ {key} repeats {into} word for word (merged)",
    near_duplicate="≈ {similarity:.2f} {first} ~ {second}",
    contradiction="⚠ “{question}” is answered differently by {keys}",
    more="… and {count} more",
    overview=(
        "<b>Knowledge base</b>: {published} published, {retired} retired articles; languages: {languages}."
    ),
    overview_article="• {title} <i>(v{version}, {updated})</i>",
    review="💡 <b>FAQ suggestion #{id}</b>{source}\n\n<b>Q:</b> {question}\n\n<b>A:</b> {answer}",
    review_from_ticket=" · from ticket #{ticket}",
    review_from_gaps=" · from the knowledge gaps",
    button_approve="✅ Approve",
    button_edit="✏️ Edit",
    button_reject="❌ Reject",
    review_approved="✅ Approved by {editor}: {verb} {key} v{version}; the bot answers from it now.",
    review_rejected="❌ Rejected by {editor}.",
    review_closed="Suggestion #{id} is already {status}.",
    review_missing="Suggestion #{id} no longer exists (its customer's data may have been erased).",
    review_edit_prompt=(
        "Send me the new answer for suggestion #{id} as your next message: it is approved with it.\n"
        "<b>Q:</b> {question}\n/cancel keeps the suggestion pending."
    ),
    review_edit_toast="Send the new answer as a message.",
    review_edit_cancelled="Editing cancelled: suggestion #{id} is still pending.",
    review_edit_text="Please send the answer as text, or /cancel.",
    review_stranger="Only editors can review suggestions.",
    verb_created="created",
    verb_updated="updated",
)

SUMMARY_LINES = 8


def escape(text: str) -> str:
    return _html_escape(text, quote=False)


def format_ingest_summary(report: Any, texts: EditorTexts = EDITOR_EN) -> str:
    """An ingest report as an editor reads it in Telegram (escaped HTML, short)."""
    lines = [
        texts.summary.format(
            added=report.added,
            updated=report.updated,
            unchanged=report.unchanged,
            retired=report.retired,
            failed=len(report.failed),
        )
    ]
    for failure in report.failed:
        where = f"{Path(failure.path).name}:{failure.line}" if failure.line else Path(failure.path).name
        lines.append(texts.failed_file.format(where=escape(where), reason=escape(failure.error or "")))
    findings: list[str] = [texts.merged.format(key=escape(m.key), into=escape(m.into)) for m in report.merged]
    findings += [
        texts.near_duplicate.format(similarity=n.similarity, first=escape(n.first), second=escape(n.second))
        for n in report.findings.near_duplicates
    ]
    findings += [
        texts.contradiction.format(question=escape(c.question), keys=escape(", ".join(c.keys)))
        for c in report.findings.contradictions
    ]
    lines += findings[:SUMMARY_LINES]
    if len(findings) > SUMMARY_LINES:
        lines.append(texts.more.format(count=len(findings) - SUMMARY_LINES))
    return "\n".join(lines)


def format_kb_overview(articles: list[Any], texts: EditorTexts = EDITOR_EN, *, recent: int = 5) -> str:
    published = [a for a in articles if a.status == "published"]
    retired = [a for a in articles if a.status == "retired"]
    languages = sorted({lang for a in published for lang in a.languages})
    lines = [
        texts.overview.format(
            published=len(published), retired=len(retired), languages=escape(", ".join(languages) or "-")
        )
    ]
    for article in sorted(published, key=lambda a: a.updated_at, reverse=True)[:recent]:
        lines.append(
            texts.overview_article.format(
                title=escape(article.title),
                version=article.current_version,
                updated=article.updated_at.strftime("%Y-%m-%d %H:%M"),
            )
        )
    return "\n".join(lines)
