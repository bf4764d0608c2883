"""The judge prompts of ragas 0.4.3's `ragas.metrics.collections`, reproduced character for character.

A prompt is `BasePrompt.to_string` of ragas/prompt/metrics/base_prompt.py: the instruction, the
JSON schema of the expected output, the few-shot examples as indented JSON, and the input as
indented JSON. The pydantic models below carry the same class names, fields and descriptions
as ragas's, so pydantic renders the same schema; tests/test_rag_vs_ragas.py checks that every
prompt equals ragas's own string. Reproducing them (instead of importing ragas) keeps ragas a
development dependency only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True)
class Prompt(Generic[In, Out]):
    instruction: str
    output_model: type[Out]
    examples: tuple[tuple[In, Out], ...]

    def render(self, data: In) -> str:
        """ragas BasePrompt.to_string, including its missing newline after the schema."""
        schema = json.dumps(self.output_model.model_json_schema())
        examples = ""
        if self.examples:
            examples = "--------EXAMPLES-----------\n" + "\n\n".join(
                f"Example {i + 1}\nInput: {x.model_dump_json(indent=4)}\nOutput: {y.model_dump_json(indent=4)}"
                for i, (x, y) in enumerate(self.examples))
        return f"""{self.instruction}
Please return the output in a JSON format that complies with the following schema as specified in JSON Schema:
{schema}Do not use single quotes in your response but double quotes,properly escaped with a backslash.

{examples}
-----------------------------

Now perform the same with the following input
input: {data.model_dump_json(indent=4, exclude_none=True)}
Output: """


# --- faithfulness (ragas/metrics/collections/faithfulness/util.py) ------------------------------


class StatementGeneratorInput(BaseModel):
    """Input model for statement generation."""  # part of the JSON schema in the prompt

    question: str = Field(..., description="The question being answered")
    answer: str = Field(..., description="The answer text to break down into statements")


class StatementGeneratorOutput(BaseModel):
    """Structured output for statement generation."""  # part of the JSON schema in the prompt

    statements: list[str] = Field(..., description="The generated statements from the answer")


class StatementFaithfulnessAnswer(BaseModel):
    """Individual statement with reason and verdict for NLI evaluation."""  # part of the JSON schema in the prompt

    statement: str = Field(..., description="the original statement, word-by-word")
    reason: str = Field(..., description="the reason of the verdict")
    verdict: int = Field(..., description="the verdict(0/1) of the faithfulness")


class NLIStatementInput(BaseModel):
    """Input model for NLI statement evaluation."""  # part of the JSON schema in the prompt

    context: str = Field(..., description="The context to evaluate statements against")
    statements: list[str] = Field(..., description="The statements to judge for faithfulness")


class NLIStatementOutput(BaseModel):
    """Structured output for NLI statement evaluation."""  # part of the JSON schema in the prompt

    statements: list[StatementFaithfulnessAnswer] = Field(..., description="Evaluated statements with verdicts")


STATEMENTS = Prompt(
    instruction="Given a question and an answer, analyze the complexity of each sentence in the answer. Break down each sentence into one or more fully understandable statements. Ensure that no pronouns are used in any statement.",
    output_model=StatementGeneratorOutput,
    examples=((
        StatementGeneratorInput(
            question="Who was Albert Einstein and what is he best known for?",
            answer="He was a German-born theoretical physicist, widely acknowledged to be one of the greatest and most influential physicists of all time. He was best known for developing the theory of relativity, he also made important contributions to the development of the theory of quantum mechanics.",
        ),
        StatementGeneratorOutput(statements=[
            "Albert Einstein was a German-born theoretical physicist.",
            "Albert Einstein is recognized as one of the greatest and most influential physicists of all time.",
            "Albert Einstein was best known for developing the theory of relativity.",
            "Albert Einstein made important contributions to the development of the theory of quantum mechanics.",
        ]),
    ),),
)

NLI = Prompt(
    instruction="Your task is to judge the faithfulness of a series of statements based on a given context. For each statement you must return verdict as 1 if the statement can be directly inferred based on the context or 0 if the statement can not be directly inferred based on the context.",
    output_model=NLIStatementOutput,
    examples=((
        NLIStatementInput(
            context="John is a student at XYZ University. He is pursuing a degree in Computer Science. He is enrolled in several courses this semester, including Data Structures, Algorithms, and Database Management. John is a diligent student and spends a significant amount of time studying and completing assignments. He often stays late in the library to work on his projects.",
            statements=["John is majoring in Biology.", "John is taking a course on Artificial Intelligence.",
                        "John is a dedicated student.", "John has a part-time job."],
        ),
        NLIStatementOutput(statements=[
            StatementFaithfulnessAnswer(statement="John is majoring in Biology.", reason="John's major is explicitly stated as Computer Science, not Biology.", verdict=0),
            StatementFaithfulnessAnswer(statement="John is taking a course on Artificial Intelligence.", reason="The context mentions courses in Data Structures, Algorithms, and Database Management, but does not mention Artificial Intelligence.", verdict=0),
            StatementFaithfulnessAnswer(statement="John is a dedicated student.", reason="The context states that John is a diligent student who spends a significant amount of time studying and completing assignments.", verdict=1),
            StatementFaithfulnessAnswer(statement="John has a part-time job.", reason="There is no information in the context about John having a part-time job.", verdict=0),
        ]),
    ),),
)


# --- answer relevancy (ragas/metrics/collections/answer_relevancy/util.py) ----------------------


class AnswerRelevanceInput(BaseModel):
    """Input model for answer relevance evaluation."""  # part of the JSON schema in the prompt

    response: str = Field(..., description="The response/answer to generate questions from")


class AnswerRelevanceOutput(BaseModel):
    """Structured output for answer relevance question generation."""  # part of the JSON schema in the prompt

    question: str = Field(..., description="Question that can be answered from the response")
    noncommittal: int = Field(..., description="1 if the response is evasive/vague, 0 if it is substantive")


RELEVANCE = Prompt(
    instruction="""Generate a question for the given answer and identify if the answer is noncommittal.
Give noncommittal as 1 if the answer is noncommittal (evasive, vague, or ambiguous) and 0 if the answer is substantive.
Examples of noncommittal answers: "I don't know", "I'm not sure", "It depends".""",
    output_model=AnswerRelevanceOutput,
    examples=(
        (AnswerRelevanceInput(response="Albert Einstein was born in Germany."),
         AnswerRelevanceOutput(question="Where was Albert Einstein born?", noncommittal=0)),
        (AnswerRelevanceInput(response="The capital of France is Paris, a city known for its architecture and culture."),
         AnswerRelevanceOutput(question="What is the capital of France?", noncommittal=0)),
        (AnswerRelevanceInput(response="I don't know about the groundbreaking feature of the smartphone invented in 2023 as I am unaware of information beyond 2022."),
         AnswerRelevanceOutput(question="What was the groundbreaking feature of the smartphone invented in 2023?", noncommittal=1)),
    ),
)


# --- context precision (ragas/metrics/collections/context_precision/util.py) --------------------

EINSTEIN_CONTEXT = "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist, widely held to be one of the greatest and most influential scientists of all time. Best known for developing the theory of relativity, he also made important contributions to quantum mechanics, and was thus a central figure in the revolutionary reshaping of the scientific understanding of nature that modern physics accomplished in the first decades of the twentieth century. His mass–energy equivalence formula E = mc2, which arises from relativity theory, has been called 'the world's most famous equation'. He received the 1921 Nobel Prize in Physics 'for his services to theoretical physics, and especially for his discovery of the law of the photoelectric effect', a pivotal step in the development of quantum theory. His work is also known for its influence on the philosophy of science. In a 1999 poll of 130 leading physicists worldwide by the British journal Physics World, Einstein was ranked the greatest physicist of all time. His intellectual achievements and originality have made Einstein synonymous with genius."
WORLD_CUP_CONTEXT = "The 2022 ICC Men's T20 World Cup, held from October 16 to November 13, 2022, in Australia, was the eighth edition of the tournament. Originally scheduled for 2020, it was postponed due to the COVID-19 pandemic. England emerged victorious, defeating Pakistan by five wickets in the final to clinch their second ICC Men's T20 World Cup title."
ANDES_CONTEXT = "The Andes is the longest continental mountain range in the world, located in South America. It stretches across seven countries and features many of the highest peaks in the Western Hemisphere. The range is known for its diverse ecosystems, including the high-altitude Andean Plateau and the Amazon rainforest."
EINSTEIN_ANSWER = "Albert Einstein, born on 14 March 1879, was a German-born theoretical physicist, widely held to be one of the greatest and most influential scientists of all time. He received the 1921 Nobel Prize in Physics for his services to theoretical physics."


class ContextPrecisionInput(BaseModel):
    """Input model for context precision evaluation."""  # part of the JSON schema in the prompt

    question: str = Field(..., description="The question being asked")
    context: str = Field(..., description="The context to evaluate for usefulness")
    answer: str = Field(..., description="The answer/reference/response to compare against")


class ContextPrecisionOutput(BaseModel):
    """Structured output for context precision evaluation."""  # part of the JSON schema in the prompt

    reason: str = Field(..., description="Reason for verification")
    verdict: int = Field(..., description="Binary (0/1) verdict of verification")


PRECISION = Prompt(
    instruction='Given question, answer and context verify if the context was useful in arriving at the given answer. Give verdict as "1" if useful and "0" if not with json output.',
    output_model=ContextPrecisionOutput,
    examples=(
        (ContextPrecisionInput(question="What can you tell me about Albert Einstein?", context=EINSTEIN_CONTEXT, answer=EINSTEIN_ANSWER),
         ContextPrecisionOutput(reason="The provided context was indeed useful in arriving at the given answer. The context includes key information about Albert Einstein's life and contributions, which are reflected in the answer.", verdict=1)),
        (ContextPrecisionInput(question="who won 2020 icc world cup?", context=WORLD_CUP_CONTEXT, answer="England"),
         ContextPrecisionOutput(reason="the context was useful in clarifying the situation regarding the 2020 ICC World Cup and indicating that England was the winner of the tournament that was intended to be held in 2020 but actually took place in 2022.", verdict=1)),
        (ContextPrecisionInput(question="What is the tallest mountain in the world?", context=ANDES_CONTEXT, answer="Mount Everest."),
         ContextPrecisionOutput(reason="the provided context discusses the Andes mountain range, which, while impressive, does not include Mount Everest or directly relate to the question about the world's tallest mountain.", verdict=0)),
    ),
)


# --- context recall (ragas/metrics/collections/context_recall/util.py) --------------------------


class ContextRecallInput(BaseModel):
    """Input model for context recall evaluation."""  # part of the JSON schema in the prompt

    question: str = Field(..., description="The original question asked by the user")
    context: str = Field(..., description="The retrieved context passage to evaluate")
    answer: str = Field(..., description="The reference answer containing statements to classify")


class ContextRecallClassification(BaseModel):
    """Classification of a single statement."""  # part of the JSON schema in the prompt

    statement: str = Field(..., description="Individual statement extracted from the answer")
    reason: str = Field(..., description="Reasoning for why the statement is or isn't attributable to context")
    attributed: int = Field(..., description="Binary classification: 1 if the statement can be attributed to context, 0 otherwise")


class ContextRecallOutput(BaseModel):
    """Structured output for context recall classifications."""  # part of the JSON schema in the prompt

    classifications: list[ContextRecallClassification] = Field(..., description="List of statement classifications")


RECALL = Prompt(
    instruction="""Given a context and an answer, analyze each statement in the answer and classify if the statement can be attributed to the given context or not.
Use only binary classification: 1 if the statement can be attributed to the context, 0 if it cannot.
Provide detailed reasoning for each classification.""",
    output_model=ContextRecallOutput,
    examples=(
        (ContextRecallInput(
            question="What can you tell me about Albert Einstein?",
            # ragas's recall example spells the dashes as ASCII hyphens, unlike its precision example
            context=EINSTEIN_CONTEXT.replace("–", "-"),
            answer=EINSTEIN_ANSWER + " He published 4 papers in 1905. Einstein moved to Switzerland in 1895."),
         ContextRecallOutput(classifications=[
             ContextRecallClassification(statement="Albert Einstein, born on 14 March 1879, was a German-born theoretical physicist, widely held to be one of the greatest and most influential scientists of all time.", reason="The date of birth of Einstein is mentioned clearly in the context.", attributed=1),
             ContextRecallClassification(statement="He received the 1921 Nobel Prize in Physics for his services to theoretical physics.", reason="The exact sentence is present in the given context.", attributed=1),
             ContextRecallClassification(statement="He published 4 papers in 1905.", reason="There is no mention about papers he wrote in the given context.", attributed=0),
             ContextRecallClassification(statement="Einstein moved to Switzerland in 1895.", reason="There is no supporting evidence for this in the given context.", attributed=0),
         ])),
        (ContextRecallInput(question="who won 2020 icc world cup?", context=WORLD_CUP_CONTEXT, answer="England"),
         ContextRecallOutput(classifications=[ContextRecallClassification(statement="England", reason="The context clarifies that England won the 2022 edition (which was originally scheduled for 2020).", attributed=1)])),
        (ContextRecallInput(question="What is the tallest mountain in the world?", context=ANDES_CONTEXT, answer="Mount Everest."),
         ContextRecallOutput(classifications=[ContextRecallClassification(statement="Mount Everest.", reason="The provided context discusses the Andes mountain range, which does not include Mount Everest or directly relate to the world's tallest mountain.", attributed=0)])),
    ),
)


PROMPTS = (STATEMENTS, NLI, RELEVANCE, PRECISION, RECALL)
