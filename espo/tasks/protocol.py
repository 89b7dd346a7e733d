"""``Protocol``: one paper's prompts, reward and metric for a task family, chosen in the config.

d1 and ESPO pose the same tasks with different prompts, reward components and evaluation parsers, and each
paper's numbers only compare under its own. That difference is a variant of the task, not a switch every task
must take: a built-in task (``espo.tasks.GSM8K`` ...) holds one ``Protocol`` object and its prompts, reward
and metric are that object's. Its family's protocols are named (``protocol: d1``, ``protocol: espo``) and
built from the task's settings; a ``Protocol`` object of your own may be given instead (in Python, or in a
config as ``protocol: {class_path: my_lab.MyGSM8KPrompt}``) to change a prompt without a new task.

A task of your own does not need any of this: it subclasses ``espo.tasks.Task`` and implements its one
prompt, reward and metric directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from espo.tasks.base import Prompt, Task


class Protocol(ABC):
    """A paper's prompts, reward components and evaluation metric for one task family (see the module doc).

    Subclasses are small and stateless beyond their settings (the named fixes of a paper's quirks): the task
    travels to reward workers with its protocol, so a protocol must pickle.
    """

    name: ClassVar[str] = "custom"  # the paper, as configs name it; ``espo test`` prints it with the scores

    @abstractmethod
    def prompt(self, example: dict[str, Any]) -> Prompt:
        """The training prompt of ``example``."""

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        """The evaluation prompt (d1 evaluates with other prompts than it trains with); default ``prompt``."""
        return self.prompt(example)

    def eval_prefill(self) -> str:
        """Text appended after the rendered evaluation prompt (d1's ``<reasoning>``); default none."""
        return ""

    @abstractmethod
    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        """The named reward components of one completion."""

    @abstractmethod
    def score(self, completion: str, example: dict[str, Any]) -> float:
        """The evaluation metric of one completion, in [0, 1]."""

    def target(self, example: dict[str, Any]) -> str:
        """A reference completion in this protocol's format, for supervised warm starts (optional)."""
        raise NotImplementedError(f"{type(self).__name__} has no reference completions for SFT.")

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


def choose(task: str, protocol: str | Protocol, named: Mapping[str, Callable[[], Protocol]]) -> Protocol:
    """The protocol object a task runs with: ``protocol`` itself, or the one ``named`` builds for its name.

    Args:
        task: The task's name, for the error message.
        protocol: A name of ``named`` (as configs write it) or a ``Protocol`` object.
        named: The family's protocols by name, each a function that builds it from the task's settings.
    """
    if isinstance(protocol, Protocol):
        return protocol
    if protocol not in named:
        raise ValueError(f"{task}: protocol must be one of {sorted(named)} or a Protocol object, got {protocol!r}.")
    return named[protocol]()


class ProtocolTask(Task):
    """A task whose prompts, reward and metric are those of its ``protocol`` (the built-in paper tasks).

    A subclass loads the data (``load_split``) and sets ``self.protocol`` in its ``__init__`` (with
    :func:`choose`); everything a paper decides is delegated.
    """

    protocol: Protocol

    def prompt(self, example: dict[str, Any]) -> Prompt:
        return self.protocol.prompt(example)

    def eval_prompt(self, example: dict[str, Any]) -> Prompt:
        return self.protocol.eval_prompt(example)

    def eval_prefill(self) -> str:
        return self.protocol.eval_prefill()

    def reward_components(self, completion: str, example: dict[str, Any]) -> dict[str, float]:
        return self.protocol.reward_components(completion, example)

    def score(self, completion: str, example: dict[str, Any]) -> float:
        return self.protocol.score(completion, example)

    def target(self, example: dict[str, Any]) -> str:
        return self.protocol.target(example)
