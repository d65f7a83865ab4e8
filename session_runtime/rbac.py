"""The runtime's Role, defined once: Pulumi declares it, doctor asks it, tests enforce it.

The rules are exactly what the Kubernetes backend does, and no more:

* pods: find (list, get), wait (watch), create and delete session pods;
* secrets: create a session's token Secret (owned by its Pod in that one
  create) and delete it on close; ``get`` only two Secrets *by name* — the key
  session tokens are derived from, and the default session's token. No ``list``
  and no unnamed ``get``: the runtime cannot read ``gam-credentials`` or any
  other Secret of the namespace;
* events: list and watch (start-up progress), create (the reaper records why
  it deletes a pod, as a ``SessionReaped`` Event on it);
* podtemplates: get the one session template, by name.

:func:`access_questions` turns the rules into the SelfSubjectAccessReview
questions doctor asks, with the resource name wherever the rule has one (a
Role limited to ``resourceNames`` refuses the unnamed question).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from session_runtime import naming
from session_runtime.ids import DEFAULT_SESSION_ID

__all__ = [
    "RUNTIME_ROLE_RULES",
    "RUNTIME_SERVICE_ACCOUNT",
    "AccessQuestion",
    "access_questions",
    "rule_text",
]

#: The runtime's ServiceAccount (the gamgui server and the reaper run as it); the
#: Role and its RoleBinding carry the same name.
RUNTIME_SERVICE_ACCOUNT = "gamgui-runtime"

#: The Role's rules (core API group only), in the order doctor reports them.
RUNTIME_ROLE_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [""],
        "resources": ["pods"],
        "verbs": ["get", "list", "watch", "create", "delete"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "delete"]},
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [
            naming.TOKEN_KEY_SECRET_NAME,
            naming.session_token_secret_name(DEFAULT_SESSION_ID),
        ],
        "verbs": ["get"],
    },
    {"apiGroups": [""], "resources": ["events"], "verbs": ["list", "watch", "create"]},
    {
        "apiGroups": [""],
        "resources": ["podtemplates"],
        "resourceNames": [naming.SESSION_TEMPLATE_NAME],
        "verbs": ["get"],
    },
)


class AccessQuestion(NamedTuple):
    """One thing the runtime must be allowed to do: ``verb`` on ``resource`` [``name``]."""

    verb: str
    resource: str
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f"/{self.name}" if self.name else "")


def access_questions(
    rules: tuple[dict[str, Any], ...] = RUNTIME_ROLE_RULES,
) -> list[AccessQuestion]:
    """Return every (verb, resource, name) the rules grant, named where the rule names them."""
    questions: list[AccessQuestion] = []
    for rule in rules:
        names: list[str | None] = list(rule.get("resourceNames") or [None])
        for resource in rule["resources"]:
            for verb in rule["verbs"]:
                questions.extend(AccessQuestion(verb, resource, name) for name in names)
    return questions


def rule_text(question: AccessQuestion) -> str:
    """Return the Role rule that grants ``question``, as a person would write it in YAML."""
    names = f', resourceNames: ["{question.name}"]' if question.name else ""
    return f'{{resources: ["{question.resource}"], verbs: ["{question.verb}"]{names}}}'
