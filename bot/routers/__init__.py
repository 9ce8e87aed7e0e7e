"""Routers, one module each, each built by ``build_router()``; who may do what.

Three roles. A **customer** is anyone in a private chat with the bot. An **agent** is a user id
in ``telegram.agents`` (with the list empty: any non-bot member of the agents' chat, checked with
getChatMember). An **editor** is a user id in ``telegram.editors``. Agents and editors are
customers too in their own private chat. The routers enforce it with filters, in this order:

=================  =========================================  ============================================
router             scope (filters)                            may
=================  =========================================  ============================================
``editors``        private chat, ``from_user.id`` in editors  send a document (ingested), ``/kb``, the
                                                              answer after "Edit"; press Approve / Edit /
                                                              Reject (anyone else pressing them is told
                                                              only editors may)
``privacy``        private chat                               ``/mydata``, ``/forget`` and its buttons,
                                                              which act on the presser only
``customer``       private chat                               ``/start`` ``/help`` ``/human`` ``/cancel``,
                                                              questions, anything else (a non-editor's
                                                              document is stored, never ingested);
                                                              buttons, checked as below
``agents``         ``chat.id == telegram.agents_chat_id``     agents: every command, relays, edits and
                                                              button; anyone else: refused (in a topic
                                                              and for commands in General), never relayed
=================  =========================================  ============================================

Callback data is only a name (see :mod:`bot.keyboards`); each press is checked on the server:

==================  ============================================================================
button              accepted when
==================  ============================================================================
``FeedbackCb``      the stored answer was sent to the presser (else "no longer available")
``ArticleCb``       it is a button of the "did you mean" message it was pressed on (``Offered``)
``HumanCb``         its reason is one the keyboards produce (``HUMAN_REASONS``)
``CsatCb``          the ticket is the presser's and resolved, score 1-5 (else "no longer available")
``ForgetCb``        always: it erases the presser's own data
``ReviewCb``        the presser is an editor, the action one of approve / edit / reject, the
                    suggestion still pending
``TicketCb``        the presser is an agent, the action claim or close, pressed in that ticket's topic
``SendAnswerCb``    the presser is an agent, pressed in that ticket's topic on the ``/suggest``
                    message that offers this article (``Offered``)
==================  ============================================================================

Any other press (forged data, another chat's button, a stale one) is answered with a short toast
(``button_refused``) by the last handler of the customer or agents router and changes nothing.
Customers are also flood-limited (:mod:`bot.flood`); everything they see is escaped for HTML
(:mod:`bot.render`, :mod:`bot.forum`, ``tests/test_security.py``).
"""
