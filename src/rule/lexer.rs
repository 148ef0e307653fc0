//! Splits rule text into tokens, one at a time, as the parser asks for them.
//!
//! Tokens are pulled lazily so that the error reported is always the first
//! bad token, whether the problem is one of spelling (an unterminated string)
//! or of grammar (a word where a value belongs). Positions are 1-based lines
//! and columns counted in characters. A word, number, duration or date is
//! one maximal run of characters; the parser decides what it must be.

use std::iter::Peekable;
use std::str::CharIndices;

use super::error::ParseError;

/// A 1-based line and column, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) line: usize,
    pub(crate) column: usize,
}

impl Position {
    /// An error at this position.
    pub(crate) fn error(self, message: impl Into<String>) -> ParseError {
        ParseError::new(self.line, self.column, message)
    }
}

/// What kind of token was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A keyword or qualifier name: a letter or `_`, then letters, digits, `_`.
    Word,
    /// A run starting with a digit: a number, a duration or a date.
    Literal,
    /// A quoted string, with its escapes resolved.
    Str(String),
    OpenParen,
    CloseParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A character that starts no token.
    Unexpected,
    /// The end of the text.
    End,
}

/// One token: its kind, its text as written and where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token<'a> {
    pub(crate) kind: TokenKind,
    pub(crate) text: &'a str,
    pub(crate) position: Position,
}

impl Token<'_> {
    /// Whether this is the keyword or name `word`, in any case.
    pub(crate) fn is_word(&self, word: &str) -> bool {
        self.kind == TokenKind::Word && self.text.eq_ignore_ascii_case(word)
    }

    /// The token as an error message names it: quoted, or `end of text`.
    pub(crate) fn describe(&self) -> String {
        const SHOWN_CHARS: usize = 40;
        if self.kind == TokenKind::End {
            return "end of text".to_owned();
        }
        let mut shown: String = self.text.chars().take(SHOWN_CHARS).collect();
        if shown.len() < self.text.len() {
            shown.push('…');
        }
        format!("`{shown}`")
    }
}

/// The tokenizer: a cursor over the text that yields one token per call.
pub(crate) struct Lexer<'a> {
    text: &'a str,
    chars: Peekable<CharIndices<'a>>,
    line: usize,
    column: usize,
}

impl<'a> Lexer<'a> {
    /// A lexer at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Lexer {
            text,
            chars: text.char_indices().peekable(),
            line: 1,
            column: 1,
        }
    }

    /// The next token, `End` once the text is used up.
    pub(crate) fn next_token(&mut self) -> Result<Token<'a>, ParseError> {
        self.skip_white_space();

        let position = self.position();
        let Some((start, first)) = self.bump() else {
            return Ok(Token {
                kind: TokenKind::End,
                text: "",
                position,
            });
        };

        let kind = match first {
            '(' => TokenKind::OpenParen,
            ')' => TokenKind::CloseParen,
            ',' => TokenKind::Comma,
            '=' => TokenKind::Eq,
            '!' if self.bump_if('=') => TokenKind::Ne,
            '<' if self.bump_if('=') => TokenKind::Le,
            '<' => TokenKind::Lt,
            '>' if self.bump_if('=') => TokenKind::Ge,
            '>' => TokenKind::Gt,
            '"' => TokenKind::Str(self.string(position)?),
            c if c.is_ascii_alphabetic() || c == '_' => {
                self.bump_while(|c| c.is_ascii_alphanumeric() || c == '_');
                TokenKind::Word
            }
            c if c.is_ascii_digit() => {
                self.bump_while(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                TokenKind::Literal
            }
            _ => TokenKind::Unexpected,
        };

        let end = self.offset();
        Ok(Token {
            kind,
            text: self.text.get(start..end).unwrap_or_default(),
            position,
        })
    }

    /// The rest of a string after its opening quote, escapes resolved.
    fn string(&mut self, start: Position) -> Result<String, ParseError> {
        let mut value = String::new();
        loop {
            match self.bump().map(|(_, c)| c) {
                None => return Err(start.error("unterminated string")),
                Some('"') => return Ok(value),
                Some('\n' | '\r') => return Err(start.error("line break in string")),
                Some('\\') => match self.bump().map(|(_, c)| c) {
                    Some(c @ ('"' | '\\')) => value.push(c),
                    Some(c) if c != '\n' && c != '\r' => {
                        return Err(start.error(format!(
                            "unknown escape `\\{c}` in string (only `\\\"` and `\\\\`)"
                        )));
                    }
                    Some(_) => return Err(start.error("line break in string")),
                    None => return Err(start.error("unterminated string")),
                },
                Some(c) => value.push(c),
            }
        }
    }

    fn skip_white_space(&mut self) {
        self.bump_while(char::is_whitespace);
    }

    fn bump_while(&mut self, keep: impl Fn(char) -> bool) {
        while self.chars.peek().is_some_and(|&(_, c)| keep(c)) {
            self.bump();
        }
    }

    fn bump_if(&mut self, expected: char) -> bool {
        let matches = self.chars.peek().is_some_and(|&(_, c)| c == expected);
        if matches {
            self.bump();
        }
        matches
    }

    /// Takes one character, keeping the line and column up to date. `\r\n`,
    /// `\n` and a lone `\r` each end one line.
    fn bump(&mut self) -> Option<(usize, char)> {
        let (offset, c) = self.chars.next()?;
        let ends_line = match c {
            '\n' => true,
            '\r' => self.chars.peek().is_none_or(|&(_, next)| next != '\n'),
            _ => false,
        };
        if ends_line {
            self.line += 1;
            self.column = 1;
        } else if c != '\r' {
            self.column += 1;
        }
        Some((offset, c))
    }

    fn position(&self) -> Position {
        Position {
            line: self.line,
            column: self.column,
        }
    }

    fn offset(&mut self) -> usize {
        self.chars
            .peek()
            .map_or(self.text.len(), |&(offset, _)| offset)
    }
}

/// The position of the character at byte `offset` of `text` (or just past its end).
pub(crate) fn position_of(text: &str, offset: usize) -> Position {
    let mut lexer = Lexer::new(text);
    while lexer.offset() < offset && lexer.bump().is_some() {}
    lexer.position()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<(TokenKind, &str, usize, usize)> {
        let mut lexer = Lexer::new(text);
        let mut tokens = Vec::new();
        loop {
            let token = lexer.next_token().expect("valid tokens");
            if token.kind == TokenKind::End {
                return tokens;
            }
            tokens.push((
                token.kind,
                token.text,
                token.position.line,
                token.position.column,
            ));
        }
    }

    #[test]
    fn tokens_carry_their_text_and_position() {
        let tokens = kinds("spent>=49.99 AND\n  tag IN (\"a\",\"b\")");
        assert_eq!(
            tokens,
            [
                (TokenKind::Word, "spent", 1, 1),
                (TokenKind::Ge, ">=", 1, 6),
                (TokenKind::Literal, "49.99", 1, 8),
                (TokenKind::Word, "AND", 1, 14),
                (TokenKind::Word, "tag", 2, 3),
                (TokenKind::Word, "IN", 2, 7),
                (TokenKind::OpenParen, "(", 2, 10),
                (TokenKind::Str("a".to_owned()), "\"a\"", 2, 11),
                (TokenKind::Comma, ",", 2, 14),
                (TokenKind::Str("b".to_owned()), "\"b\"", 2, 15),
                (TokenKind::CloseParen, ")", 2, 18),
            ]
        );
    }

    #[test]
    fn comparison_operators_are_single_tokens() {
        let tokens: Vec<TokenKind> = kinds("= != < <= > >=").into_iter().map(|t| t.0).collect();
        assert_eq!(
            tokens,
            [
                TokenKind::Eq,
                TokenKind::Ne,
                TokenKind::Lt,
                TokenKind::Le,
                TokenKind::Gt,
                TokenKind::Ge
            ]
        );
    }

    #[test]
    fn literals_run_over_dates_and_durations() {
        let tokens: Vec<&str> = kinds("2026-03-01 30d 2W 1.5")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(tokens, ["2026-03-01", "30d", "2W", "1.5"]);
    }

    #[test]
    fn string_escapes_are_resolved() {
        let tokens = kinds(r#""say \"hi\" \\ ok" "é""#);
        assert_eq!(tokens[0].0, TokenKind::Str(r#"say "hi" \ ok"#.to_owned()));
        assert_eq!(tokens[1].0, TokenKind::Str("é".to_owned()));
        assert_eq!(tokens[1].3, 20);
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        let tokens = kinds("\"ééé\" x");
        assert_eq!(tokens[1], (TokenKind::Word, "x", 1, 7));
    }

    #[test]
    fn crlf_and_lone_cr_each_end_one_line() {
        let tokens = kinds("a\r\nb\rc\n\nd");
        let lines: Vec<(usize, usize)> = tokens.iter().map(|t| (t.2, t.3)).collect();
        assert_eq!(lines, [(1, 1), (2, 1), (3, 1), (5, 1)]);
    }

    #[test]
    fn bad_strings_are_refused_at_their_opening_quote() {
        let error = |text| Lexer::new(text).next_token().unwrap_err();
        assert_eq!(
            error("  \"abc"),
            ParseError::new(1, 3, "unterminated string")
        );
        assert_eq!(
            error("\"ab\ncd\""),
            ParseError::new(1, 1, "line break in string")
        );
        assert_eq!(
            error("\"a\\nb\""),
            ParseError::new(
                1,
                1,
                "unknown escape `\\n` in string (only `\\\"` and `\\\\`)"
            )
        );
        assert_eq!(
            error("\"ab\\"),
            ParseError::new(1, 1, "unterminated string")
        );
    }

    #[test]
    fn stray_characters_become_unexpected_tokens() {
        let tokens = kinds("@ ! -");
        assert_eq!(
            tokens,
            [
                (TokenKind::Unexpected, "@", 1, 1),
                (TokenKind::Unexpected, "!", 1, 3),
                (TokenKind::Unexpected, "-", 1, 5),
            ]
        );
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let text = "a".repeat(50);
        let token = Lexer::new(&text).next_token().unwrap();
        assert_eq!(token.describe(), format!("`{}…`", "a".repeat(40)));
    }

    #[test]
    fn byte_offsets_map_to_positions() {
        assert_eq!(position_of("ab\nécd", 5), Position { line: 2, column: 2 });
        assert_eq!(position_of("ab", 9), Position { line: 1, column: 3 });
    }
}
